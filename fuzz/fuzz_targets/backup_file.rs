//! The backup reader's parsers of outside input (a backup directory is whatever the
//! operator hands `confab restore`): the manifest's text and a keyspace file's records.
//! Neither may panic or allocate beyond the input, whatever the bytes; records come out
//! whole, non-empty and in strictly increasing key order, and a file read whole is exactly
//! its records written again.
//!
//! The input is used whole as a manifest and as a keyspace file.

#![no_main]

use confab_engine::backup::{parse_manifest, read_records, write_record, KeyspaceFile};
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

fuzz_target!(|data: &[u8]| {
    if let Ok(manifest) = parse_manifest(data) {
        for entry in &manifest.keyspaces {
            assert!(!entry.file.contains('/') && !entry.file.starts_with('.'));
        }
    }

    let mut entry = KeyspaceFile {
        keyspace: "messages".into(),
        file: "messages.kv".into(),
        records: u64::MAX,
        bytes: data.len() as u64,
        sha256: hex::encode(Sha256::digest(data)),
    };
    let mut records: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let first = read_records(data, data.len() as u64, &entry, |key, value| {
        if let Some((previous, _)) = records.last() {
            assert!(*previous < key, "keys strictly increasing");
        }
        assert!(!key.is_empty());
        records.push((key, value));
        Ok(())
    });
    assert!(first.is_err(), "no file holds u64::MAX records");

    // Read to its end (only the count was wrong): with the right count it is accepted,
    // and its records written again are the file.
    let mut written = Vec::new();
    for (key, value) in &records {
        write_record(&mut written, key, value).unwrap();
    }
    if written.len() == data.len() {
        assert_eq!(written, data);
        entry.records = records.len() as u64;
        let mut again = 0u64;
        read_records(data, data.len() as u64, &entry, |_, _| {
            again += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(again, entry.records);
    }
});
