//! [`Bundles`]: a queue read as a stream of bundles, each everything that
//! was waiting when the stream was polled (within bounds). A burst costs
//! one stream message (one frame to write and decode, one wake-up), and an
//! item that is alone goes out at once: nothing is held back for company.
//! Gateways bundle their calls on a publish stream this way, brokers the
//! answers.

use std::{
    pin::Pin,
    task::{Context, Poll, ready},
};

use futures_util::Stream;
use tokio::sync::mpsc;

pub struct Bundles<T> {
    rx: mpsc::Receiver<T>,
    /// An item taken that did not fit in the last bundle: the next begins
    /// with it.
    held: Option<T>,
    max_items: usize,
    max_bytes: usize,
    weigh: fn(&T) -> usize,
}

impl<T> Bundles<T> {
    /// Bundles of at most `max_items`, and of at most `max_bytes` as
    /// `weigh` counts them unless one item alone is heavier (a bundle
    /// always carries at least one).
    pub fn new(
        rx: mpsc::Receiver<T>,
        max_items: usize,
        max_bytes: usize,
        weigh: fn(&T) -> usize,
    ) -> Self {
        Self {
            rx,
            held: None,
            max_items: max_items.max(1),
            max_bytes,
            weigh,
        }
    }
}

impl<T> Unpin for Bundles<T> {}

impl<T> Stream for Bundles<T> {
    type Item = Vec<T>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let first = match self.held.take() {
            Some(first) => first,
            None => match ready!(self.rx.poll_recv(cx)) {
                Some(first) => first,
                None => return Poll::Ready(None),
            },
        };
        let mut bytes = (self.weigh)(&first);
        let mut bundle = vec![first];
        while bundle.len() < self.max_items {
            let Ok(next) = self.rx.try_recv() else { break };
            let weight = (self.weigh)(&next);
            if bytes + weight > self.max_bytes {
                self.held = Some(next);
                break;
            }
            bytes += weight;
            bundle.push(next);
        }
        Poll::Ready(Some(bundle))
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;

    #[tokio::test]
    async fn what_is_waiting_goes_as_one_bundle_in_order() {
        let (tx, rx) = mpsc::channel(16);
        let mut bundles = Bundles::new(rx, 4, 1000, |_: &u32| 1);
        for i in 1..=6 {
            tx.try_send(i).unwrap();
        }
        assert_eq!(bundles.next().await.unwrap(), vec![1, 2, 3, 4]);
        assert_eq!(bundles.next().await.unwrap(), vec![5, 6]);
        tx.try_send(7).unwrap();
        assert_eq!(
            bundles.next().await.unwrap(),
            vec![7],
            "one waiting item is sent alone"
        );
        drop(tx);
        assert!(bundles.next().await.is_none());
    }

    #[tokio::test]
    async fn a_bundle_stops_before_its_byte_bound_and_the_next_begins_there() {
        let (tx, rx) = mpsc::channel(16);
        let mut bundles = Bundles::new(rx, 100, 10, |n: &usize| *n);
        for n in [4, 4, 4, 20, 1] {
            tx.try_send(n).unwrap();
        }
        drop(tx);
        assert_eq!(bundles.next().await.unwrap(), vec![4, 4]);
        assert_eq!(bundles.next().await.unwrap(), vec![4]);
        assert_eq!(
            bundles.next().await.unwrap(),
            vec![20],
            "an item heavier than the bound goes alone"
        );
        assert_eq!(bundles.next().await.unwrap(), vec![1]);
        assert!(bundles.next().await.is_none());
    }
}
