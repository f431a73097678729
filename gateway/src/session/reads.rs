//! The requests that read a channel without joining it: presence pages,
//! presence counts and history, each checked against the connection's
//! access first.

use serde_json::value::RawValue;
use switchboard_core::{
    Broker, ChannelName, HistoryRequest, Position, PresenceRequest,
    frame::reply::{HistoryData, PresenceData, Publications, StatsData},
    presence::MAX_PAGE,
};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::{Session, respond};
use crate::error::RequestError;

impl<B: Broker> Session<B> {
    pub(super) async fn presence(
        &self,
        id: Option<&RawValue>,
        channel: ChannelName,
        after: Option<String>,
        limit: Option<usize>,
    ) -> Result<Option<Utf8Bytes>, RequestError> {
        self.presence_access(&channel)?;
        self.own_personal(&channel)?;
        let req = PresenceRequest {
            channel: channel.clone(),
            after,
            limit: limit.unwrap_or(MAX_PAGE),
        };
        let page = self.gateway.broker.presence(req).await?;
        Ok(Some(respond(
            id,
            PresenceData {
                channel: channel.as_str(),
                clients: &page.clients,
                next_cursor: page.next.as_deref(),
            },
        )))
    }

    pub(super) async fn presence_stats(
        &self,
        id: Option<&RawValue>,
        channel: ChannelName,
    ) -> Result<Option<Utf8Bytes>, RequestError> {
        self.presence_access(&channel)?;
        let stats = self.gateway.broker.presence_stats(&channel).await?;
        Ok(Some(respond(
            id,
            StatsData {
                channel: channel.as_str(),
                num_clients: stats.num_clients as u64,
                num_users: stats.num_users as u64,
            },
        )))
    }

    /// A page of history; a client asking for more than
    /// `max_history_reply` gets that many, not a refusal.
    pub(super) async fn history(
        &self,
        id: Option<&RawValue>,
        channel: ChannelName,
        since: Option<Position>,
        limit: Option<usize>,
        reverse: bool,
    ) -> Result<Option<Utf8Bytes>, RequestError> {
        let options = self.access(&channel, false)?;
        self.own_personal(&channel)?;
        if !options.history_enabled() {
            return Err(RequestError::NotAvailable("history"));
        }
        let max = self.gateway.settings.gateway.limits.max_history_reply;
        let limit = limit.unwrap_or(max).min(max);
        let reply = self
            .gateway
            .broker
            .history(HistoryRequest {
                channel: channel.clone(),
                since,
                limit,
                reverse,
            })
            .await?;
        Ok(Some(respond(
            id,
            HistoryData {
                channel: channel.as_str(),
                offset: reply.position.offset,
                epoch: &reply.position.epoch,
                publications: Publications(&reply.publications),
                complete: reply.complete,
            },
        )))
    }

    fn presence_access(&self, channel: &ChannelName) -> Result<(), RequestError> {
        let options = self.access(channel, false)?;
        let personal = &self.gateway.settings.namespaces.personal;
        if !options.presence || (channel.is_personal() && !personal.presence) {
            return Err(RequestError::NotAvailable("presence"));
        }
        Ok(())
    }
}
