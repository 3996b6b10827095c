//! What several benches build alike: a WhatsApp channel that is never called, and a lead's
//! inbound event.

use std::sync::Arc;

use confab_engine::ids::{ChannelId, WorkspaceId};
use confab_engine::inbound::InboundEvent;
use confab_engine::model::{Channel, ChannelConfig, WhatsappConfig};

/// A WhatsApp channel of a new workspace; its Graph API address answers nothing.
pub fn whatsapp_channel() -> Arc<Channel> {
    Arc::new(Channel {
        id: ChannelId::new(),
        workspace_id: WorkspaceId::new(),
        name: "bench".into(),
        config: ChannelConfig::Whatsapp(WhatsappConfig {
            phone_number_id: "1".into(),
            app_secret: "s".into(),
            verify_token: "v".into(),
            access_token: "a".into(),
            api_base_url: "http://127.0.0.1:9".into(),
        }),
        created_at: 0,
        disabled: false,
        limits: Default::default(),
    })
}

/// Message `n` of lead `lead` (its thread, name and phone follow from the number).
pub fn inbound(channel: ChannelId, lead: usize, n: u64, text: String) -> InboundEvent {
    InboundEvent {
        channel_id: channel,
        thread: format!("5511{lead:09}"),
        provider_message_id: format!("wamid.bench.{n}"),
        contact_name: Some(format!("Lead {lead}")),
        contact_phone: Some(format!("+5511{lead:09}")),
        contact_email: None,
        contact_profile: None,
        sent_at: 1_700_000_000_000 + n as i64,
        text,
        content_type: None,
        raw: None,
        reply_to: None,
        campaign: None,
        received: None,
        details: Default::default(),
        attachments: Vec::new(),
    }
}
