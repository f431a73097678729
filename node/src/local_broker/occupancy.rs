//! Occupancy changes on a channel this broker owns (first subscriber in,
//! last out, a user's first and last connection) and client events, as
//! the app's webhooks report them ([`crate::webhook`]). Only the owner sees
//! every change to a channel, so each is reported once cluster-wide.

use super::{LocalBroker, channel_state::ChannelState};
use crate::webhook::{Change, ClientEvent, EventType, Webhooks};
use serde_json::value::RawValue;
use switchboard_core::ClientInfo;

impl LocalBroker {
    /// From now on, changes on the apps' channels are sent to their
    /// webhooks. Set once, before serving.
    pub fn set_webhooks(&self, webhooks: Webhooks) {
        let _ = self.inner.webhooks.set(webhooks);
    }

    fn webhooks_for(&self, s: &ChannelState) -> Option<&Webhooks> {
        self.inner.webhooks.get().filter(|w| w.watches(&s.name))
    }

    /// `client` has just joined `s`'s presence.
    pub(super) fn joined(&self, s: &ChannelState, client: &ClientInfo) {
        let Some(w) = self.webhooks_for(s) else {
            return;
        };
        if s.presence.stats().num_clients == 1 {
            w.notify(&s.name, Change::Occupied);
        }
        if s.presence.user_connections(&client.user_id) == 1 {
            w.notify(
                &s.name,
                Change::MemberAdded {
                    user_id: client.user_id.clone(),
                },
            );
        }
    }

    /// `client` has just left `s`'s presence.
    pub(super) fn left(&self, s: &ChannelState, client: &ClientInfo) {
        let Some(w) = self.webhooks_for(s) else {
            return;
        };
        if s.presence.user_connections(&client.user_id) == 0 {
            w.notify(
                &s.name,
                Change::MemberRemoved {
                    user_id: client.user_id.clone(),
                },
            );
        }
        if s.presence.is_empty() {
            w.notify(&s.name, Change::Vacated);
        }
    }

    /// `data` was published on `s`: a client event if the Pusher door's
    /// envelope says so.
    pub(super) fn published(&self, s: &ChannelState, data: &RawValue) {
        let Some(w) = self.inner.webhooks.get() else {
            return;
        };
        if !w.wants(&s.name, EventType::ClientEvent) {
            return;
        }
        if let Some(event) = ClientEvent::from_envelope(data) {
            w.notify(&s.name, Change::ClientEvent(event));
        }
    }
}
