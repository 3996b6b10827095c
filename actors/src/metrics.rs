//! Names of the actor runtime's metrics.

pub const LIVE_CONVERSATIONS: &str = "confab_conversation_actors_live";
pub const ACTIVATIONS: &str = "confab_conversation_activations_total";
pub const PASSIVATIONS: &str = "confab_conversation_passivations_total";
pub const RESTARTS: &str = "confab_conversation_restarts_total";
pub const CONVERSATIONS_CREATED: &str = "confab_conversations_created_total";
pub const MESSAGES: &str = "confab_messages_total";
pub const CONNECTOR_SENDS: &str = "confab_connector_sends_total";
pub const CONNECTOR_RESTARTS: &str = "confab_connector_restarts_total";
