//! One attached gateway's stream of deliveries, as the broker sends it:
//! whatever is ready when the stream is polled goes out as one message (a
//! batch), so that a burst costs the gateway one message to decode and
//! one wake-up, not one per delivery. A gateway that did not ask for
//! batches gets one delivery per message, as before batches existed.

use std::{
    pin::Pin,
    task::{Context, Poll, ready},
};

use futures_util::Stream;
use switchboard_proto::broker::v1 as pb;
use tokio::sync::mpsc;
use tonic::Status;

/// Most deliveries in one batch.
const BATCH_MAX: usize = 256;
/// A batch stops growing once its frames reach this many bytes, well
/// under the gateway's message size limit.
const BATCH_BYTES: usize = 256 * 1024;

pub struct DeliveryStream {
    rx: mpsc::Receiver<pb::Delivery>,
    batches: bool,
}

impl DeliveryStream {
    pub fn new(rx: mpsc::Receiver<pb::Delivery>, batches: bool) -> Self {
        Self { rx, batches }
    }
}

impl Stream for DeliveryStream {
    type Item = Result<pb::Delivery, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Some(first) = ready!(self.rx.poll_recv(cx)) else {
            return Poll::Ready(None);
        };
        if !self.batches {
            return Poll::Ready(Some(Ok(first)));
        }
        let mut bytes = first.frame.len();
        let mut first = Some(first);
        let mut batch = Vec::new();
        while batch.len() < BATCH_MAX && bytes < BATCH_BYTES {
            let Ok(next) = self.rx.try_recv() else { break };
            bytes += next.frame.len();
            batch.extend(first.take());
            batch.push(next);
        }
        Poll::Ready(Some(Ok(match first {
            // Only one was ready: sent as it is.
            Some(only) => only,
            None => pb::Delivery {
                batch,
                ..Default::default()
            },
        })))
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;

    fn delivery(offset: u64) -> pb::Delivery {
        pb::Delivery {
            channel: "c".into(),
            offset: Some(offset),
            frame: vec![b'x'; 10].into(),
            ..Default::default()
        }
    }

    fn offsets(d: &pb::Delivery) -> Vec<u64> {
        if d.batch.is_empty() {
            d.offset.into_iter().collect()
        } else {
            d.batch.iter().filter_map(|d| d.offset).collect()
        }
    }

    #[tokio::test]
    async fn what_is_ready_goes_out_as_one_batch_in_order() {
        let (tx, rx) = mpsc::channel(1024);
        let mut stream = DeliveryStream::new(rx, true);
        for i in 1..=BATCH_MAX as u64 + 3 {
            tx.try_send(delivery(i)).unwrap();
        }
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!(first.channel, "", "a batch carries nothing else");
        assert_eq!(offsets(&first), (1..=BATCH_MAX as u64).collect::<Vec<_>>());
        let rest = stream.next().await.unwrap().unwrap();
        let last = BATCH_MAX as u64;
        assert_eq!(offsets(&rest), vec![last + 1, last + 2, last + 3]);
        tx.try_send(delivery(1000)).unwrap();
        let single = stream.next().await.unwrap().unwrap();
        assert!(single.batch.is_empty(), "one ready delivery is sent as is");
        assert_eq!(single.offset, Some(1000));
        drop(tx);
        assert!(stream.next().await.is_none());
    }

    #[tokio::test]
    async fn a_gateway_without_batches_gets_one_delivery_per_message() {
        let (tx, rx) = mpsc::channel(16);
        let mut stream = DeliveryStream::new(rx, false);
        tx.try_send(delivery(1)).unwrap();
        tx.try_send(delivery(2)).unwrap();
        assert_eq!(stream.next().await.unwrap().unwrap().offset, Some(1));
        assert_eq!(stream.next().await.unwrap().unwrap().offset, Some(2));
    }

    #[tokio::test]
    async fn a_batch_stops_at_its_byte_bound() {
        let (tx, rx) = mpsc::channel(16);
        let mut stream = DeliveryStream::new(rx, true);
        for i in 1..=3 {
            let mut d = delivery(i);
            d.frame = vec![b'x'; BATCH_BYTES / 2].into();
            tx.try_send(d).unwrap();
        }
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!(offsets(&first), vec![1, 2]);
        assert_eq!(offsets(&stream.next().await.unwrap().unwrap()), vec![3]);
    }
}
