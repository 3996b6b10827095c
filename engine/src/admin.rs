//! Provisioning: workspaces, agents with API tokens, channels. Each function validates its
//! input and returns the new object with the [`WriteSet`] that stores it.

use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::catalogue::{self, Ks};
use crate::committer::WriteSet;
use crate::ids::{AgentId, ChannelId, WorkspaceId};
use crate::model::{Agent, Channel, ChannelConfig, Role, Workspace};
use crate::time::now_millis;

/// Prefix of every agent API token, so a leaked token is recognisable.
pub const TOKEN_PREFIX: &str = "cfb_";

/// API tokens are 256 random bits, so a fast hash is enough to store them: unlike a
/// password there is nothing to guess, and the check stays cheap on every request.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("{TOKEN_PREFIX}{}", hex::encode(bytes))
}

pub fn new_workspace(name: &str) -> (Workspace, WriteSet) {
    let workspace = Workspace {
        id: WorkspaceId::new(),
        name: name.trim().to_string(),
        created_at: now_millis(),
    };
    let mut set = WriteSet::new();
    set.put(
        Ks::WorkspaceState,
        workspace.id.to_bytes().to_vec(),
        &workspace,
    );
    (workspace, set)
}

/// A new agent and its plain token (shown once; only its hash is stored).
pub fn new_agent(
    workspace_id: WorkspaceId,
    name: &str,
    email: &str,
    role: Role,
) -> (Agent, String, WriteSet) {
    let agent = Agent {
        id: AgentId::new(),
        workspace_id,
        name: name.trim().to_string(),
        email: email.trim().to_string(),
        role,
        created_at: now_millis(),
    };
    let token = new_token();
    let mut set = WriteSet::new();
    set.put(Ks::AgentState, agent.id.to_bytes().to_vec(), &agent)
        .put_raw(
            Ks::WsAgent,
            catalogue::ws_agent(workspace_id, agent.id),
            Vec::new(),
        )
        .put_raw(
            Ks::TokenAgent,
            token_hash(&token).to_vec(),
            agent.id.to_bytes().to_vec(),
        );
    (agent, token, set)
}

pub fn new_channel(
    workspace_id: WorkspaceId,
    name: &str,
    config: ChannelConfig,
) -> (Channel, WriteSet) {
    let channel = Channel {
        id: ChannelId::new(),
        workspace_id,
        name: name.trim().to_string(),
        config,
        created_at: now_millis(),
        disabled: false,
        limits: Default::default(),
    };
    let set = channel_set(&channel);
    (channel, set)
}

/// The writes that store a new channel.
pub fn channel_set(channel: &Channel) -> WriteSet {
    let mut set = WriteSet::new();
    set.put(Ks::ChannelState, channel.id.to_bytes().to_vec(), channel)
        .put_raw(
            Ks::WsChannel,
            catalogue::ws_channel(channel.workspace_id, channel.id),
            Vec::new(),
        );
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_prefixed_random_and_hashed_stably() {
        let a = new_token();
        let b = new_token();
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 64);
        assert_ne!(a, b);
        assert_eq!(token_hash(&a), token_hash(&a));
        assert_ne!(token_hash(&a), token_hash(&b));
    }
}
