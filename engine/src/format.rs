//! The store's format version, and the migrations that bring an older data directory up
//! to it.
//!
//! The version is a big-endian `u32` under [`META_FORMAT_VERSION`] in the `meta` keyspace.
//! A store written before versioning has none: it is format 0. Opening the store
//! ([`crate::store::Store::open`]) runs, in order, every migration whose target is above
//! the stored version, each made durable with its new version before the next starts, so
//! a crash half-way resumes at the step it stopped in (every migration is idempotent). A
//! store newer than this binary is refused before anything is written to it.
//!
//! Adding a format: raise [`FORMAT_VERSION`], append a [`Migration`] to [`MIGRATIONS`]
//! whose `to` is the new version, and check in a data directory written by the release
//! before it (`tests/fixtures/format-N.tar.gz`) with a test that opens it.

use fjall::{Database, Keyspace, PersistMode};

use crate::catalogue::Ks;
use crate::error::{Error, Result};

/// The store format this binary writes.
pub const FORMAT_VERSION: u32 = 4;

/// `meta` key of the store's format version.
pub const META_FORMAT_VERSION: &[u8] = b"format_version";

/// One step from format `to - 1` to `to`.
pub struct Migration {
    pub to: u32,
    /// What it changes, for the log.
    pub what: &'static str,
    /// Rewrites what the format change needs. Must be idempotent: it runs again after a
    /// crash before its version was stored.
    pub run: fn(&Database, &[Keyspace]) -> Result<()>,
}

/// Every migration, in order; the last one's `to` is [`FORMAT_VERSION`].
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        to: 1,
        what: "the store records its format version (data directories from before 2026-12-07)",
        // Format 1 changed no key or value: its layout is format 0's, now versioned.
        run: |_, _| Ok(()),
    },
    Migration {
        to: 2,
        what: "the delta log may announce removals (conversation_removed, messages_removed)",
        // Nothing stored changes: the version only keeps a binary that cannot read the new
        // delta kinds from opening a store that may hold them.
        run: |_, _| Ok(()),
    },
    Migration {
        to: 3,
        what: "snoozed conversations, lead outcomes, the audit trail (new lanes, timers, facets and keyspaces)",
        // Nothing stored changes: an older binary would list a snoozed conversation as
        // closed, never wake it, refuse notification settings that name the new kind, and
        // leave outcome counters and activity entries behind.
        run: |_, _| Ok(()),
    },
    Migration {
        to: 4,
        what: "merged conversations (a new keyspace and conversation fields)",
        // Nothing stored changes: an older binary would list a merged conversation again
        // and drop its link when it next wrote either conversation.
        run: |_, _| Ok(()),
    },
];

/// The stored format version: `None` for a new, empty store; 0 for a store from before
/// versioning.
pub fn stored_version(keyspaces: &[Keyspace]) -> Result<Option<u32>> {
    let meta = &keyspaces[Ks::Meta.index()];
    if let Some(bytes) = meta.get(META_FORMAT_VERSION)? {
        let bytes: [u8; 4] = bytes
            .as_ref()
            .try_into()
            .map_err(|_| Error::Corrupt(format!("format version of {} bytes", bytes.len())))?;
        return Ok(Some(u32::from_be_bytes(bytes)));
    }
    for ks in keyspaces {
        if !ks.is_empty()? {
            return Ok(Some(0));
        }
    }
    Ok(None)
}

/// Brings the store to [`FORMAT_VERSION`]: stamps a new store, migrates an older one,
/// refuses a newer one. Returns the version it found (`None`: new).
pub fn upgrade(db: &Database, keyspaces: &[Keyspace]) -> Result<Option<u32>> {
    upgrade_with(db, keyspaces, MIGRATIONS, FORMAT_VERSION)
}

fn upgrade_with(
    db: &Database,
    keyspaces: &[Keyspace],
    migrations: &[Migration],
    current: u32,
) -> Result<Option<u32>> {
    let found = stored_version(keyspaces)?;
    match found {
        None => stamp(db, keyspaces, current)?,
        Some(version) if version > current => {
            return Err(Error::NewerFormat {
                found: version,
                supported: current,
            });
        }
        Some(version) => {
            for migration in migrations.iter().filter(|m| m.to > version) {
                tracing::info!(
                    from = migration.to - 1,
                    to = migration.to,
                    what = migration.what,
                    "migrating the store"
                );
                (migration.run)(db, keyspaces)?;
                stamp(db, keyspaces, migration.to)?;
            }
        }
    }
    Ok(found)
}

fn stamp(db: &Database, keyspaces: &[Keyspace], version: u32) -> Result<()> {
    keyspaces[Ks::Meta.index()].insert(META_FORMAT_VERSION, version.to_be_bytes())?;
    db.persist(PersistMode::SyncAll)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &std::path::Path) -> (Database, Vec<Keyspace>) {
        let db = Database::builder(dir).open().expect("open");
        let keyspaces = Ks::ALL
            .iter()
            .map(|ks| db.keyspace(ks.name(), Default::default).expect("keyspace"))
            .collect();
        (db, keyspaces)
    }

    fn version(keyspaces: &[Keyspace]) -> Option<u32> {
        stored_version(keyspaces).expect("readable")
    }

    #[test]
    fn the_last_migration_reaches_the_current_format_in_steps_of_one() {
        for (i, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(migration.to, i as u32 + 1);
        }
        assert_eq!(MIGRATIONS.last().map(|m| m.to), Some(FORMAT_VERSION));
    }

    #[test]
    fn a_new_store_is_stamped_and_an_unversioned_one_migrates_from_zero() {
        let dir = tempfile::tempdir().expect("dir");
        let (db, keyspaces) = open(dir.path());
        assert_eq!(upgrade(&db, &keyspaces).expect("upgrade"), None);
        assert_eq!(version(&keyspaces), Some(FORMAT_VERSION));

        let dir = tempfile::tempdir().expect("dir");
        let (db, keyspaces) = open(dir.path());
        keyspaces[Ks::ConvState.index()]
            .insert(b"some conversation", b"state")
            .expect("insert");
        assert_eq!(version(&keyspaces), Some(0));
        assert_eq!(upgrade(&db, &keyspaces).expect("upgrade"), Some(0));
        assert_eq!(version(&keyspaces), Some(FORMAT_VERSION));
    }

    #[test]
    fn migrations_run_in_order_once_and_resume_after_the_last_stored_step() {
        fn first(_: &Database, ks: &[Keyspace]) -> Result<()> {
            let meta = &ks[Ks::Meta.index()];
            let runs = meta.get(b"runs")?.map_or(0, |v| v.len());
            meta.insert(b"runs", vec![b'1'; runs + 1])?;
            Ok(())
        }
        fn second(_: &Database, ks: &[Keyspace]) -> Result<()> {
            let meta = &ks[Ks::Meta.index()];
            // Sees the first one's work.
            let runs = meta.get(b"runs")?.map_or(0, |v| v.len());
            meta.insert(b"second saw", vec![b'1'; runs])?;
            Ok(())
        }
        let migrations = [
            Migration {
                to: 1,
                what: "first",
                run: first,
            },
            Migration {
                to: 2,
                what: "second",
                run: second,
            },
        ];
        let dir = tempfile::tempdir().expect("dir");
        let (db, keyspaces) = open(dir.path());
        keyspaces[Ks::ConvState.index()]
            .insert(b"c", b"s")
            .expect("insert");
        // Stopped after the first step: the next start runs only the second.
        upgrade_with(&db, &keyspaces, &migrations[..1], 1).expect("first step");
        assert_eq!(version(&keyspaces), Some(1));
        assert_eq!(
            upgrade_with(&db, &keyspaces, &migrations, 2).expect("second step"),
            Some(1)
        );
        let meta = &keyspaces[Ks::Meta.index()];
        assert_eq!(meta.get(b"runs").expect("read").map(|v| v.len()), Some(1));
        assert_eq!(
            meta.get(b"second saw").expect("read").map(|v| v.len()),
            Some(1)
        );
        assert_eq!(version(&keyspaces), Some(2));
    }

    #[test]
    fn a_newer_store_is_refused_and_left_as_it_was() {
        let dir = tempfile::tempdir().expect("dir");
        let (db, keyspaces) = open(dir.path());
        stamp(&db, &keyspaces, FORMAT_VERSION + 1).expect("stamp");
        let refused = upgrade(&db, &keyspaces).expect_err("newer format");
        assert!(
            matches!(refused, Error::NewerFormat { found, supported }
                if found == FORMAT_VERSION + 1 && supported == FORMAT_VERSION),
            "{refused}"
        );
        assert!(refused.to_string().contains("newer than this binary"));
        assert_eq!(version(&keyspaces), Some(FORMAT_VERSION + 1));
    }
}
