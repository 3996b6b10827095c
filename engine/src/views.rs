//! Secondary indexes over conversations (the inbox's views and filters), maintained in the
//! same write batch as the conversation state they derive from.

use crate::catalogue::{self, Ks};
use crate::committer::WriteSet;
use crate::model::Conversation;

/// Adds to `set` the index changes that take a conversation from `before` (absent when it
/// is new) to `after`. Every writer of conversation state calls this in the same batch.
pub fn update(set: &mut WriteSet, before: Option<&Conversation>, after: &Conversation) {
    let key = |c: &Conversation| catalogue::ws_activity(c.workspace_id, c.last_activity_at, c.id);
    match before {
        Some(before) if key(before) == key(after) => {}
        Some(before) => {
            set.delete(Ks::WsActivity, key(before));
            set.put_raw(Ks::WsActivity, key(after), Vec::new());
        }
        None => {
            set.put_raw(Ks::WsActivity, key(after), Vec::new());
        }
    }
}
