//! Typed identifiers. Every id is a ULID: 16 bytes in keys (time-ordered, big-endian),
//! 26 Crockford base32 characters on the wire.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use ulid::Ulid;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[cfg_attr(
            feature = "openapi",
            derive(utoipa::ToSchema),
            schema(
                value_type = String,
                description = "A ULID: 26 Crockford base32 characters.",
                example = "01JE7Q6W0Z3D8K4M2N5P7R9T1V"
            )
        )]
        pub struct $name(pub Ulid);

        impl $name {
            /// A fresh id, ordered after every id made earlier by this process.
            pub fn new() -> Self {
                Self(crate::ids::next_ulid())
            }

            /// The 16 bytes used in store keys.
            pub fn to_bytes(self) -> [u8; 16] {
                self.0.to_bytes()
            }

            pub fn from_bytes(bytes: [u8; 16]) -> Self {
                Self(Ulid::from_bytes(bytes))
            }

            /// Reads the 16 leading bytes of `key` as an id.
            pub fn from_key_prefix(key: &[u8]) -> Option<Self> {
                let bytes: [u8; 16] = key.get(..16)?.try_into().ok()?;
                Some(Self::from_bytes(bytes))
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl FromStr for $name {
            type Err = crate::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Ulid::from_string(s)
                    .map(Self)
                    .map_err(|_| crate::Error::InvalidId(s.chars().take(64).collect()))
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.collect_str(&self.0)
                } else {
                    s.serialize_bytes(&self.0.to_bytes())
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                if d.is_human_readable() {
                    let s = String::deserialize(d)?;
                    s.parse().map_err(serde::de::Error::custom)
                } else {
                    let bytes = serde_bytes_16(d)?;
                    Ok(Self::from_bytes(bytes))
                }
            }
        }
    };
}

fn serde_bytes_16<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 16], D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = [u8; 16];
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("16 bytes")
        }
        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
            v.try_into().map_err(|_| E::invalid_length(v.len(), &self))
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = [0u8; 16];
            for (i, b) in out.iter_mut().enumerate() {
                *b = seq
                    .next_element()?
                    .ok_or_else(|| serde::de::Error::invalid_length(i, &self))?;
            }
            Ok(out)
        }
    }
    d.deserialize_bytes(V)
}

/// Monotonic ULID generation: ids made later in this process sort later, even within
/// one millisecond.
pub(crate) fn next_ulid() -> Ulid {
    use std::sync::Mutex;
    static GENERATOR: Mutex<Option<ulid::Generator>> = Mutex::new(None);
    let mut guard = GENERATOR.lock().unwrap_or_else(|p| p.into_inner());
    let generator = guard.get_or_insert_with(ulid::Generator::new);
    // Overflow only happens after 2^80 ids in one millisecond; fall back to a random one.
    generator.generate().unwrap_or_else(|_| Ulid::new())
}

id_type!(
    /// One agency client: the unit of tenancy.
    WorkspaceId
);
id_type!(
    /// A human member of a workspace.
    AgentId
);
id_type!(
    /// A connected channel account (one WhatsApp number, one mailbox, one LinkedIn account).
    ChannelId
);
id_type!(
    /// A lead.
    ContactId
);
id_type!(
    /// One conversation with one lead on one channel account.
    ConversationId
);
id_type!(
    /// One message of a conversation.
    MessageId
);
id_type!(
    /// A knowledge-base article.
    ArticleId
);
id_type!(
    /// A canned reply of a workspace's library.
    CannedReplyId
);
id_type!(
    /// An agent's feedback on an AI message.
    FeedbackId
);
id_type!(
    /// A notification for one agent.
    NotificationId
);
id_type!(
    /// A browser's Web Push subscription.
    PushSubscriptionId
);
id_type!(
    /// An entry of a conversation's activity or of a workspace's admin audit.
    ActivityId
);
id_type!(
    /// An outgoing webhook endpoint.
    WebhookId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_text_and_bytes() {
        let id = ConversationId::new();
        let text = id.to_string();
        assert_eq!(text.len(), 26);
        assert_eq!(text.parse::<ConversationId>().ok(), Some(id));
        assert_eq!(ConversationId::from_bytes(id.to_bytes()), id);
        assert_eq!(ConversationId::from_key_prefix(&id.to_bytes()), Some(id));
        assert!("not-an-id".parse::<ConversationId>().is_err());
    }

    #[test]
    fn ids_made_later_sort_later() {
        let a = MessageId::new();
        let b = MessageId::new();
        assert!(a < b);
        assert!(a.to_bytes() < b.to_bytes());
    }

    #[test]
    fn ids_round_trip_through_msgpack_and_json() {
        let id = AgentId::new();
        let packed = rmp_serde::to_vec(&id).expect("encode");
        assert_eq!(
            rmp_serde::from_slice::<AgentId>(&packed).expect("decode"),
            id
        );
        let json = serde_json::to_string(&id).expect("json");
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<AgentId>(&json).expect("json"), id);
    }
}
