//! Stream positions and the recovery decision.
//!
//! Every publication in a channel gets the next `offset`; the channel's
//! `epoch` names one unbroken run of offsets. When the broker loses a
//! channel's state (a restart, an expired channel, a failover without
//! continuity) the channel starts again under a new epoch, so a client that
//! remembers `(offset, epoch)` can tell "nothing missed" from "gap".

use serde::{Deserialize, Serialize};

/// The position of a publication in its channel.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Position {
    pub offset: u64,
    pub epoch: String,
}

/// What a broker can give a client that asks to resume after `since`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// Every publication after `since` is still in history, starting at this offset.
    Complete { from_offset: u64 },
    /// The epoch matches but history no longer reaches back to `since`:
    /// the retained publications from this offset on are all that is left.
    Partial { from_offset: u64 },
    /// `since` lies in the future of this epoch: nothing after it exists.
    Impossible,
}

impl Recovery {
    /// Decides recovery for a channel at `current`, whose history holds the
    /// offsets `oldest..=current.offset` (`oldest` is `None` when history is
    /// empty).
    pub fn decide(since: &Position, current: &Position, oldest: Option<u64>) -> Self {
        if since.epoch != current.epoch {
            // Another epoch: what was missed in the old one is gone, but
            // what the current epoch retains from its start can be given.
            return Recovery::Partial {
                from_offset: oldest.unwrap_or(current.offset + 1),
            };
        }
        if since.offset > current.offset {
            return Recovery::Impossible;
        }
        let from_offset = since.offset + 1;
        if from_offset > current.offset {
            return Recovery::Complete { from_offset };
        }
        match oldest {
            Some(oldest) if oldest <= from_offset => Recovery::Complete { from_offset },
            Some(oldest) => Recovery::Partial {
                from_offset: oldest,
            },
            None => Recovery::Partial {
                from_offset: current.offset + 1,
            },
        }
    }

    pub fn is_complete(&self) -> bool {
        matches!(self, Recovery::Complete { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(offset: u64, epoch: &str) -> Position {
        Position {
            offset,
            epoch: epoch.into(),
        }
    }

    #[test]
    fn decisions() {
        let cur = pos(10, "e");
        assert_eq!(
            Recovery::decide(&pos(10, "e"), &cur, None),
            Recovery::Complete { from_offset: 11 }
        );
        assert_eq!(
            Recovery::decide(&pos(4, "e"), &cur, Some(5)),
            Recovery::Complete { from_offset: 5 }
        );
        assert_eq!(
            Recovery::decide(&pos(3, "e"), &cur, Some(5)),
            Recovery::Partial { from_offset: 5 }
        );
        assert_eq!(
            Recovery::decide(&pos(3, "e"), &cur, None),
            Recovery::Partial { from_offset: 11 }
        );
        assert_eq!(
            Recovery::decide(&pos(3, "x"), &cur, Some(1)),
            Recovery::Partial { from_offset: 1 }
        );
        assert_eq!(
            Recovery::decide(&pos(3, "x"), &cur, None),
            Recovery::Partial { from_offset: 11 }
        );
        assert_eq!(
            Recovery::decide(&pos(11, "e"), &cur, Some(1)),
            Recovery::Impossible
        );
        assert_eq!(
            Recovery::decide(&pos(0, "e"), &pos(0, "e"), None),
            Recovery::Complete { from_offset: 1 }
        );
    }
}
