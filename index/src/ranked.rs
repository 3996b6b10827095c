//! The ranking collector: the top hits by relevance, newest first among hits of equal
//! relevance, that still lets tantivy skip what cannot reach the page.
//!
//! Relevance is the score rounded to hundredths ([`quantize`]), so near-equal scores tie
//! and the tie goes to the newer document (`at`). A collector that computes that key for
//! every match (`TopDocs::tweak_score`) hides the score bound from the query, and tantivy
//! then scores and keeps every match of a common word. This one keeps the page's worst key
//! and hands the query, as its pruning threshold, the lowest raw score that still rounds
//! to that key's relevance: a document below it cannot enter the page, whatever its age,
//! so the query may skip it (and whole blocks of postings, where its structure allows
//! block-max pruning). The page is exactly the one the full ordering gives.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::Column;
use tantivy::query::Weight;
use tantivy::{DocAddress, DocId, Score, SegmentOrdinal, SegmentReader};

/// Scores this close are a tie, broken by recency.
pub(crate) fn quantize(score: f32) -> f32 {
    (score * 100.0).round() / 100.0
}

/// The lowest raw score that [`quantize`]s to at least `relevance`, less a margin for
/// rounding: pruning below it never drops a document that could tie.
fn lowest_score_of(relevance: f32) -> Score {
    relevance - 0.006
}

/// A hit's place in the ranking: relevance, then newer first, then index order.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Key {
    relevance: f32,
    at: i64,
    address: DocAddress,
}

impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        self.relevance
            .total_cmp(&other.relevance)
            .then(self.at.cmp(&other.at))
            // Earlier in the index ranks higher among full ties (as `TopDocs` does).
            .then(other.address.cmp(&self.address))
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Key {}

/// The best `limit` hits from position `offset`, as `((relevance, at), address)`, best
/// first; only documents of `workspace` when given (the query then need not filter).
pub(crate) struct Ranked {
    pub limit: usize,
    pub offset: usize,
    pub workspace: Option<String>,
}

impl Ranked {
    fn keep(&self) -> usize {
        self.limit + self.offset
    }
}

/// The best hits of one segment, worst on top of the heap.
pub(crate) struct SegmentRanked {
    keep: usize,
    segment: SegmentOrdinal,
    at: Option<Column<i64>>,
    heap: BinaryHeap<Reverse<Key>>,
}

impl SegmentRanked {
    /// Considers a match; returns the threshold below which later matches cannot enter.
    fn offer(&mut self, doc: DocId, score: Score) -> Score {
        if self.keep == 0 {
            return Score::MAX;
        }
        let key = Key {
            relevance: quantize(score),
            at: self
                .at
                .as_ref()
                .and_then(|column| column.first(doc))
                .unwrap_or(0),
            address: DocAddress::new(self.segment, doc),
        };
        if self.heap.len() < self.keep {
            self.heap.push(Reverse(key));
        } else if let Some(mut worst) = self.heap.peek_mut() {
            if key > worst.0 {
                *worst = Reverse(key);
            }
        }
        self.threshold()
    }

    fn threshold(&self) -> Score {
        match self.heap.peek() {
            Some(worst) if self.heap.len() >= self.keep => lowest_score_of(worst.0.relevance),
            _ => Score::MIN,
        }
    }
}

impl SegmentCollector for SegmentRanked {
    type Fruit = Vec<Key>;

    fn collect(&mut self, doc: DocId, score: Score) {
        self.offer(doc, score);
    }

    fn harvest(self) -> Vec<Key> {
        self.heap.into_iter().map(|Reverse(key)| key).collect()
    }
}

impl Collector for Ranked {
    type Fruit = Vec<((f32, i64), DocAddress)>;
    type Child = SegmentRanked;

    fn for_segment(
        &self,
        segment: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<SegmentRanked> {
        let at = reader.fast_fields().i64("at").ok();
        Ok(SegmentRanked {
            keep: self.keep(),
            segment,
            at,
            heap: BinaryHeap::with_capacity(self.keep().min(4096)),
        })
    }

    fn requires_scoring(&self) -> bool {
        true
    }

    fn collect_segment(
        &self,
        weight: &dyn Weight,
        segment: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<Vec<Key>> {
        let mut ranked = self.for_segment(segment, reader)?;
        // With a workspace: its ordinal in this segment's column of workspaces (a segment
        // without it holds nothing of the workspace).
        let theirs = match &self.workspace {
            None => None,
            Some(workspace) => {
                let Some(column) = reader.fast_fields().str("workspace")? else {
                    return Ok(Vec::new());
                };
                let Some(ordinal) = column.dictionary().term_ord(workspace)? else {
                    return Ok(Vec::new());
                };
                Some((column.ords().clone(), ordinal))
            }
        };
        let alive = reader.alive_bitset();
        weight.for_each_pruning(Score::MIN, reader, &mut |doc, score| {
            let kept = alive.is_none_or(|alive| alive.is_alive(doc))
                && theirs
                    .as_ref()
                    .is_none_or(|(ordinals, ordinal)| ordinals.first(doc) == Some(*ordinal));
            if kept {
                ranked.offer(doc, score)
            } else {
                ranked.threshold()
            }
        })?;
        Ok(ranked.harvest())
    }

    fn merge_fruits(&self, segments: Vec<Vec<Key>>) -> tantivy::Result<Self::Fruit> {
        let mut all: Vec<Key> = segments.into_iter().flatten().collect();
        all.sort_unstable_by(|a, b| b.cmp(a));
        Ok(all
            .into_iter()
            .skip(self.offset)
            .take(self.limit)
            .map(|key| ((key.relevance, key.at), key.address))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use tantivy::collector::TopDocs;
    use tantivy::query::QueryParser;
    use tantivy::query::{BooleanQuery, ConstScoreQuery, Occur, Query, TermQuery};
    use tantivy::schema::{IndexRecordOption, Schema, FAST, INDEXED, STRING, TEXT};
    use tantivy::{doc, Index, Term};

    use super::*;

    /// Every matching document by the full ordering (the oracle): each one's score from
    /// tantivy, then relevance, newest, index order.
    fn full_order(
        searcher: &tantivy::Searcher,
        query: &dyn Query,
    ) -> Vec<((f32, i64), DocAddress)> {
        let all = searcher
            .search(query, &TopDocs::with_limit(100_000).order_by_score())
            .expect("search");
        let mut keys: Vec<Key> = all
            .into_iter()
            .map(|(score, address)| {
                let at = searcher
                    .segment_reader(address.segment_ord)
                    .fast_fields()
                    .i64("at")
                    .expect("at")
                    .first(address.doc_id)
                    .expect("has at");
                Key {
                    relevance: quantize(score),
                    at,
                    address,
                }
            })
            .collect();
        keys.sort_unstable_by(|a, b| b.cmp(a));
        keys.into_iter()
            .map(|k| ((k.relevance, k.at), k.address))
            .collect()
    }

    #[test]
    fn pages_are_exactly_the_full_ordering_with_pruning_across_segments_and_deletes() {
        let mut schema = Schema::builder();
        let body = schema.add_text_field("body", TEXT);
        let at = schema.add_i64_field("at", FAST | INDEXED);
        let id = schema.add_u64_field("id", INDEXED);
        let workspace = schema.add_text_field("workspace", STRING | FAST);
        let index = Index::create_in_ram(schema.build());
        let mut writer: tantivy::IndexWriter = index
            .writer_with_num_threads(1, 15_000_000)
            .expect("writer");
        let mut rng = StdRng::seed_from_u64(16);
        let mut n = 0u64;
        // One segment first (each segment prunes against its own page, so ties at a page's
        // edge are within one segment), then several with deletes. Short texts over a
        // small vocabulary give many equal scores, and times repeat so some documents tie
        // on both.
        for segments in [1, 4] {
            for _ in 0..segments {
                for _ in 0..600 {
                    let words: Vec<String> = (0..rng.gen_range(1..8))
                        .map(|_| format!("w{}", rng.gen_range(0..6)))
                        .collect();
                    let when = rng.gen_range(0..50i64);
                    writer
                        .add_document(doc!(
                            body => words.join(" "),
                            at => when,
                            id => n,
                            workspace => if rng.gen_bool(0.6) { "a" } else { "b" },
                        ))
                        .expect("add");
                    n += 1;
                }
                writer.commit().expect("commit");
            }
            if segments > 1 {
                for gone in (0..n).step_by(7) {
                    writer.delete_term(Term::from_field_u64(id, gone));
                }
                writer.commit().expect("commit");
            }
            let searcher = index.reader().expect("reader").searcher();
            let parser = QueryParser::for_index(&index, vec![body]);
            for text in ["w0", "w1 w4", "+w2 +w3", "w5 -w0"] {
                let query = parser.parse_query(text).expect("query");
                let expected = full_order(&searcher, &query);
                assert!(expected.len() > 100, "{text}: enough matches");
                let pages = [
                    (0, 1),
                    (0, 2),
                    (0, 3),
                    (1, 3),
                    (5, 7),
                    (0, 20),
                    (20, 20),
                    (0, 5000),
                ];
                // The workspace filtered by the query (scoring nothing), the oracle for
                // the collector's own filter.
                let in_a = BooleanQuery::new(vec![
                    (Occur::Must, query.box_clone()),
                    (
                        Occur::Must,
                        Box::new(ConstScoreQuery::new(
                            Box::new(TermQuery::new(
                                Term::from_field_text(workspace, "a"),
                                IndexRecordOption::Basic,
                            )),
                            0.0,
                        )),
                    ),
                ]);
                let expected_in_a = full_order(&searcher, &in_a);
                assert!(
                    expected_in_a.len() < expected.len(),
                    "{text}: both workspaces"
                );
                for (offset, limit) in pages {
                    let ranked = |workspace: Option<&str>| Ranked {
                        limit,
                        offset,
                        workspace: workspace.map(str::to_owned),
                    };
                    let page = searcher.search(&query, &ranked(None)).expect("search");
                    let want: Vec<_> = expected.iter().skip(offset).take(limit).copied().collect();
                    assert_eq!(
                        page, want,
                        "{text}: {segments} segments, offset {offset}, limit {limit}"
                    );
                    let page = searcher.search(&query, &ranked(Some("a"))).expect("search");
                    let want: Vec<_> = expected_in_a
                        .iter()
                        .skip(offset)
                        .take(limit)
                        .copied()
                        .collect();
                    assert_eq!(
                        page, want,
                        "{text} in a: {segments} segments, offset {offset}"
                    );
                    let none = searcher.search(&query, &ranked(Some("c"))).expect("search");
                    assert!(none.is_empty(), "no document of another workspace");
                }
            }
        }
    }
}
