//! Canned replies: a workspace's library of ready answers (a title, a shortcut agents type
//! in the composer, a text with composer variables), inserted into the composer and
//! filled like any reply when sent.

use serde::{Deserialize, Serialize};

use crate::catalogue::{self, Ks};
use crate::error::Result;
use crate::ids::{AgentId, CannedReplyId, WorkspaceId};
use crate::store::Store;
use crate::time::UnixMillis;

/// Most canned replies a workspace keeps.
pub const MAX_PER_WORKSPACE: usize = 1_000;
/// Longest title, in characters.
pub const MAX_TITLE_CHARS: usize = 200;
/// Longest shortcut, in characters.
pub const MAX_SHORTCUT_CHARS: usize = 40;
/// Longest text, in characters.
pub const MAX_TEXT_CHARS: usize = 4_096;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CannedReply {
    pub id: CannedReplyId,
    pub workspace_id: WorkspaceId,
    pub title: String,
    /// Letters, digits, `-` and `_`; unique in the workspace, whatever the case.
    pub shortcut: String,
    pub text: String,
    pub created_by: Option<AgentId>,
    pub created_at: UnixMillis,
    pub updated_at: UnixMillis,
}

/// Whether `shortcut` is 1 to [`MAX_SHORTCUT_CHARS`] letters, digits, `-` or `_`.
pub fn valid_shortcut(shortcut: &str) -> bool {
    let count = shortcut.chars().count();
    (1..=MAX_SHORTCUT_CHARS).contains(&count)
        && shortcut
            .chars()
            .all(|c| c.is_alphanumeric() || c == '-' || c == '_')
}

impl Store {
    /// The workspace's canned replies, by shortcut.
    pub fn canned_replies(&self, ws: WorkspaceId) -> Result<Vec<CannedReply>> {
        let mut replies: Vec<CannedReply> = self.with_prefix(Ks::CannedReply, &ws.to_bytes())?;
        replies.sort_by_cached_key(|r| r.shortcut.to_lowercase());
        Ok(replies)
    }

    pub fn canned_reply(&self, ws: WorkspaceId, id: CannedReplyId) -> Result<Option<CannedReply>> {
        self.get(Ks::CannedReply, &catalogue::canned_reply(ws, id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortcuts_are_short_words() {
        for good in ["price", "Price-2", "opening_hours", "preço"] {
            assert!(valid_shortcut(good), "{good}");
        }
        for bad in ["", "two words", "/price", "a{b}", &"x".repeat(41)] {
            assert!(!valid_shortcut(bad), "{bad}");
        }
    }
}
