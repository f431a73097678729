//! The requests that read a channel without joining it: presence pages,
//! presence counts and history, each checked against the connection's
//! access first, then run as a [`Call`].

use serde_json::value::RawValue;
use switchboard_core::{
    Broker, ChannelName, HistoryRequest, Position, PresenceRequest,
    frame::reply::{HistoryData, PresenceData, Publications, StatsData},
    presence::MAX_PAGE,
};

use super::{
    Session,
    pipeline::{Call, Done},
    respond,
};
use crate::error::RequestError;

impl<B: Broker> Session<B> {
    pub(super) fn presence(
        &self,
        id: Option<&RawValue>,
        channel: ChannelName,
        after: Option<String>,
        limit: Option<usize>,
    ) -> Result<Call, RequestError> {
        self.presence_access(&channel)?;
        self.own_personal(&channel)?;
        let req = PresenceRequest {
            channel: channel.clone(),
            after,
            limit: limit.unwrap_or(MAX_PAGE),
        };
        let gateway = self.gateway.clone();
        let id = id.map(ToOwned::to_owned);
        Ok(Box::pin(async move {
            let result = gateway.broker.presence(req).await.map(|page| {
                Some(respond(
                    id.as_deref(),
                    PresenceData {
                        channel: channel.as_str(),
                        clients: &page.clients,
                        next_cursor: page.next.as_deref(),
                    },
                ))
            });
            Done::answered(channel, id.as_deref(), result.map_err(RequestError::from))
        }))
    }

    pub(super) fn presence_stats(
        &self,
        id: Option<&RawValue>,
        channel: ChannelName,
    ) -> Result<Call, RequestError> {
        self.presence_access(&channel)?;
        let gateway = self.gateway.clone();
        let id = id.map(ToOwned::to_owned);
        Ok(Box::pin(async move {
            let result = gateway.broker.presence_stats(&channel).await.map(|stats| {
                Some(respond(
                    id.as_deref(),
                    StatsData {
                        channel: channel.as_str(),
                        num_clients: stats.num_clients as u64,
                        num_users: stats.num_users as u64,
                    },
                ))
            });
            Done::answered(channel, id.as_deref(), result.map_err(RequestError::from))
        }))
    }

    /// A page of history; a client asking for more than
    /// `max_history_reply` gets that many, not a refusal.
    pub(super) fn history(
        &self,
        id: Option<&RawValue>,
        channel: ChannelName,
        since: Option<Position>,
        limit: Option<usize>,
        reverse: bool,
    ) -> Result<Call, RequestError> {
        let options = self.access(&channel, false)?;
        self.own_personal(&channel)?;
        if !options.history_enabled() {
            return Err(RequestError::NotAvailable("history"));
        }
        let max = self.gateway.settings.gateway.limits.max_history_reply;
        let req = HistoryRequest {
            channel: channel.clone(),
            since,
            limit: limit.unwrap_or(max).min(max),
            reverse,
        };
        let gateway = self.gateway.clone();
        let id = id.map(ToOwned::to_owned);
        Ok(Box::pin(async move {
            let result = gateway.broker.history(req).await.map(|reply| {
                Some(respond(
                    id.as_deref(),
                    HistoryData {
                        channel: channel.as_str(),
                        offset: reply.position.offset,
                        epoch: &reply.position.epoch,
                        publications: Publications(&reply.publications),
                        complete: reply.complete,
                    },
                ))
            });
            Done::answered(channel, id.as_deref(), result.map_err(RequestError::from))
        }))
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
