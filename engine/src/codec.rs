//! Stored values: one schema-version byte, then MessagePack (rmp-serde, named fields so
//! that fields can be added later without breaking values already on disk).

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};

/// The version byte every value starts with. Bump it, and teach `decode` the old layout,
/// when a change cannot be expressed by adding `#[serde(default)]` fields.
pub const SCHEMA_VERSION: u8 = 1;

pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.push(SCHEMA_VERSION);
    // Writing to a Vec cannot fail, and every type we store serializes.
    if let Err(e) = rmp_serde::encode::write_named(&mut out, value) {
        unreachable!("encoding a stored value into memory failed: {e}");
    }
    out
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    match bytes.split_first() {
        Some((&SCHEMA_VERSION, body)) => {
            rmp_serde::from_slice(body).map_err(|e| Error::Corrupt(e.to_string()))
        }
        Some((version, _)) => Err(Error::Corrupt(format!("unknown schema version {version}"))),
        None => Err(Error::Corrupt("empty value".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{ChannelId, ConversationId, MessageId};
    use crate::model::{ChannelKind, Delivery, Direction, Message, Sender};

    fn message() -> Message {
        Message {
            id: MessageId::new(),
            conversation_id: ConversationId::new(),
            seq: 7,
            direction: Direction::Outbound,
            sender: Sender::Agent,
            agent_id: None,
            text: "héllo".into(),
            internal: false,
            channel: ChannelKind::Whatsapp,
            created_at: 1_767_225_600_000,
            delivery: Some(Delivery::Sent),
            external_id: Some("wamid.X".into()),
            content_type: None,
            reply_to: None,
            error: None,
            raw: None,
            ai: None,
            attachments: Vec::new(),
            subject: None,
            full_text: None,
            auto_reply: false,
            sent_elsewhere: false,
            reactions: Vec::new(),
            edits: Vec::new(),
            deleted_at: None,
        }
    }

    #[test]
    fn values_round_trip_with_a_version_byte() {
        let m = message();
        let bytes = encode(&m);
        assert_eq!(bytes[0], SCHEMA_VERSION);
        assert_eq!(decode::<Message>(&bytes).expect("decode"), m);
    }

    #[test]
    fn unknown_versions_and_garbage_are_corrupt_not_panics() {
        let mut bytes = encode(&message());
        bytes[0] = 99;
        assert!(matches!(decode::<Message>(&bytes), Err(Error::Corrupt(_))));
        assert!(matches!(decode::<Message>(&[]), Err(Error::Corrupt(_))));
        assert!(matches!(
            decode::<Message>(&[SCHEMA_VERSION, 0xc1]),
            Err(Error::Corrupt(_))
        ));
    }

    #[test]
    fn a_field_added_later_reads_old_values() {
        #[derive(Serialize)]
        struct Old {
            id: ChannelId,
        }
        #[derive(serde::Deserialize)]
        struct New {
            id: ChannelId,
            #[serde(default)]
            extra: Option<String>,
        }
        let id = ChannelId::new();
        let new: New = decode(&encode(&Old { id })).expect("decode");
        assert_eq!(new.id, id);
        assert_eq!(new.extra, None);
    }
}
