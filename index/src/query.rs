//! The search query language, parsed with bounded size and compiled to tantivy queries.
//!
//! ```text
//! acme pricing          both words: in the same document, or one in a message and the
//!                       other in its conversation's contact or tags ("maria pricing")
//! "price list"          a phrase
//! acme*                 a prefix (at least 2 letters; expands to at most 64 terms)
//! -spam                 excludes documents with the word
//! invoice OR receipt    either side
//! (a OR b) c            grouping, at most 4 levels deep
//! ```
//! When nothing matches exactly, words of 5+ letters match a misspelling within one edit
//! (insertion, deletion, substitution or transposition) in the message, the contact's
//! name and company, and tags (not in email addresses and phone numbers, where one digit
//! or letter off is another person). Words are analyzed like the
//! indexed text, so `ana@acme.io` is the phrase `ana acme io`.
//!
//! Limits keep hostile queries cheap: at most [`MAX_QUERY_CHARS`] characters and
//! [`MAX_TERMS`] terms; a wildcard may only end a word.

use tantivy::query::{
    BooleanQuery, BoostQuery, ConstScoreQuery, FuzzyTermQuery, Occur, PhrasePrefixQuery,
    PhraseQuery, Query, TermQuery, TermSetQuery,
};
use tantivy::schema::IndexRecordOption;
use tantivy::Term;

use crate::schema::{tokens, Fields};

/// Longest query accepted, in characters.
pub const MAX_QUERY_CHARS: usize = 512;
/// Most terms (words, phrase words, prefixes) in one query.
pub const MAX_TERMS: usize = 32;
/// Deepest nesting of parentheses.
pub const MAX_DEPTH: usize = 4;
/// Words at least this long also match within one edit.
pub const FUZZY_MIN_CHARS: usize = 5;
/// Terms a prefix expands to at most.
pub const PREFIX_MAX_EXPANSIONS: u32 = 64;
/// Shortest prefix before `*`.
pub const PREFIX_MIN_CHARS: usize = 2;

/// Why a query was refused; the message is shown to the user as is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct QueryError(pub String);

fn error<T>(message: impl Into<String>) -> Result<T, QueryError> {
    Err(QueryError(message.into()))
}

/// A parsed query: the syntax tree, before analysis.
#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    /// A bare word; `prefix` when it ended with `*`.
    Word {
        text: String,
        prefix: bool,
    },
    Phrase(String),
    /// Every positive child must match, no negated child may.
    And(Vec<(bool, Node)>),
    Or(Vec<Node>),
}

#[derive(Clone, Debug, PartialEq)]
enum Lexeme {
    Word(String),
    Quoted(String),
    Minus,
    Open,
    Close,
    Or,
}

fn lex(input: &str) -> Result<Vec<Lexeme>, QueryError> {
    let mut out = Vec::new();
    let mut chars = input.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '"' => {
                chars.next();
                let mut phrase = String::new();
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some(c) => phrase.push(c),
                        None => return error("a phrase is missing its closing quote (\")"),
                    }
                }
                out.push(Lexeme::Quoted(phrase));
            }
            '(' => {
                chars.next();
                out.push(Lexeme::Open);
            }
            ')' => {
                chars.next();
                out.push(Lexeme::Close);
            }
            '-' if out.last().is_none_or(|l| *l != Lexeme::Minus) => {
                chars.next();
                match chars.peek() {
                    Some(c) if !c.is_whitespace() && *c != ')' => out.push(Lexeme::Minus),
                    _ => return error("\"-\" must be followed by what to exclude, as in -spam"),
                }
            }
            _ => {
                let mut word = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || c == '"' || c == '(' || c == ')' {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
                out.push(if word == "OR" {
                    Lexeme::Or
                } else {
                    Lexeme::Word(word)
                });
            }
        }
    }
    Ok(out)
}

struct Parser {
    lexemes: Vec<Lexeme>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Lexeme> {
        self.lexemes.get(self.at)
    }

    fn next(&mut self) -> Option<Lexeme> {
        let lexeme = self.lexemes.get(self.at).cloned();
        self.at += 1;
        lexeme
    }

    fn or(&mut self, depth: usize) -> Result<Node, QueryError> {
        let mut alternatives = vec![self.and(depth)?];
        while self.peek() == Some(&Lexeme::Or) {
            self.next();
            alternatives.push(self.and(depth)?);
        }
        Ok(if alternatives.len() == 1 {
            alternatives.remove(0)
        } else {
            Node::Or(alternatives)
        })
    }

    fn and(&mut self, depth: usize) -> Result<Node, QueryError> {
        let mut items = Vec::new();
        loop {
            match self.peek() {
                None | Some(Lexeme::Close) | Some(Lexeme::Or) => break,
                Some(Lexeme::Minus) => {
                    self.next();
                    items.push((true, self.primary(depth)?));
                }
                Some(_) => items.push((false, self.primary(depth)?)),
            }
        }
        if items.is_empty() {
            let after_open = self.at > 0 && self.lexemes.get(self.at - 1) == Some(&Lexeme::Open);
            return match self.peek() {
                Some(Lexeme::Close) if after_open => error("\"()\" has nothing inside"),
                Some(Lexeme::Close) => error("\")\" without a matching \"(\""),
                _ => error("OR needs something to search for on each side"),
            };
        }
        Ok(if items.len() == 1 && !items[0].0 {
            items.remove(0).1
        } else {
            Node::And(items)
        })
    }

    fn primary(&mut self, depth: usize) -> Result<Node, QueryError> {
        match self.next() {
            Some(Lexeme::Word(word)) => word_node(word),
            Some(Lexeme::Quoted(phrase)) => {
                if phrase.trim().is_empty() {
                    return error("a phrase (\"…\") is empty");
                }
                Ok(Node::Phrase(phrase))
            }
            Some(Lexeme::Open) => {
                if depth >= MAX_DEPTH {
                    return error(format!("parentheses nest deeper than {MAX_DEPTH} levels"));
                }
                let inner = self.or(depth + 1)?;
                match self.next() {
                    Some(Lexeme::Close) => Ok(inner),
                    _ => error("a \"(\" is missing its closing \")\""),
                }
            }
            Some(Lexeme::Close) => error("\")\" without a matching \"(\""),
            Some(Lexeme::Or) => error("OR needs something to search for on each side"),
            Some(Lexeme::Minus) => error("\"-\" must be followed by what to exclude, as in -spam"),
            None => error("the query ends where a word was expected"),
        }
    }
}

fn word_node(word: String) -> Result<Node, QueryError> {
    match word.find('*') {
        None => Ok(Node::Word {
            text: word,
            prefix: false,
        }),
        Some(0) => error(format!(
            "\"{word}\" starts with a wildcard: a wildcard may only end a word, as in acme*"
        )),
        Some(i) if i + 1 != word.len() => error(format!(
            "\"{word}\": a wildcard may only end a word, as in acme*"
        )),
        Some(i) => Ok(Node::Word {
            text: word[..i].to_string(),
            prefix: true,
        }),
    }
}

/// What one analyzed leaf of the query matches: used to compile and to highlight.
#[derive(Clone, Debug, PartialEq)]
enum Leaf {
    /// One token; `fuzzy` when a near miss counts too.
    Term { token: String, fuzzy: bool },
    /// Tokens in a row; the last one a prefix when `prefix`.
    Phrase { tokens: Vec<String>, prefix: bool },
}

/// A query ready to run: parsed, analyzed, within limits.
#[derive(Clone, Debug)]
pub struct ParsedQuery {
    root: Analyzed,
}

#[derive(Clone, Debug)]
enum Analyzed {
    /// Every document (a search by filters alone).
    All,
    Leaf(Leaf),
    And {
        must: Vec<Analyzed>,
        must_not: Vec<Analyzed>,
    },
    Or(Vec<Analyzed>),
}

/// How a token of a document's text matched the query, for highlighting.
#[derive(Clone, Debug, PartialEq)]
pub enum Highlight {
    Exact(String),
    Prefix(String),
    Fuzzy(String),
}

impl Highlight {
    pub fn matches(&self, token: &str) -> bool {
        match self {
            Highlight::Exact(t) => token == t,
            Highlight::Prefix(p) => token.starts_with(p.as_str()),
            Highlight::Fuzzy(t) => within_one_edit(token, t),
        }
    }
}

/// Optimal string alignment distance ≤ 1 (one insertion, deletion, substitution or
/// adjacent transposition), like tantivy's fuzzy query with transpositions.
pub fn within_one_edit(a: &str, b: &str) -> bool {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a.len().abs_diff(b.len()) > 1 {
        return false;
    }
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let (ra, rb) = (&a[prefix..], &b[prefix..]);
    match (ra.len(), rb.len()) {
        (0, 0) => true,
        (la, lb) if la == lb => {
            ra[1..] == rb[1..]
                || (la >= 2 && ra[0] == rb[1] && ra[1] == rb[0] && ra[2..] == rb[2..])
        }
        (la, lb) if la > lb => ra[1..] == *rb,
        _ => *ra == rb[1..],
    }
}

impl ParsedQuery {
    /// Parses and analyzes `input`, or says why it cannot be run.
    pub fn parse(input: &str) -> Result<ParsedQuery, QueryError> {
        let chars = input.chars().count();
        if chars > MAX_QUERY_CHARS {
            return error(format!(
                "the query is {chars} characters long; at most {MAX_QUERY_CHARS} are accepted"
            ));
        }
        if input.trim().is_empty() {
            return error("the query is empty: pass what to search for in `q`");
        }
        let mut parser = Parser {
            lexemes: lex(input)?,
            at: 0,
        };
        let node = parser.or(0)?;
        if let Some(extra) = parser.peek() {
            return match extra {
                Lexeme::Close => error("\")\" without a matching \"(\""),
                _ => error("unexpected input after the query"),
            };
        }
        let mut terms = 0;
        let root = analyze(&node, &mut terms)?.ok_or_else(|| {
            QueryError("the query has no searchable words (letters or digits)".into())
        })?;
        Ok(ParsedQuery { root })
    }

    /// A query every document matches: a search by its filters alone (such as the AI's
    /// intent), newest first.
    pub fn everything() -> ParsedQuery {
        ParsedQuery {
            root: Analyzed::All,
        }
    }

    /// What to highlight in a hit's text: the positive leaves' tokens.
    pub fn highlights(&self) -> Vec<Highlight> {
        let mut out = Vec::new();
        collect_highlights(&self.root, &mut out);
        out
    }

    /// The tantivy query over `fields`' searchable fields, near misses included (no
    /// workspace filter: the searcher adds it).
    pub fn to_query(&self, fields: &Fields) -> Box<dyn Query> {
        self.compile(fields, true, &[])
    }

    /// Whether a word of the query also matches near misses.
    pub fn has_fuzzy(&self) -> bool {
        fn any(node: &Analyzed) -> bool {
            match node {
                Analyzed::All => false,
                Analyzed::Leaf(Leaf::Term { fuzzy, .. }) => *fuzzy,
                Analyzed::Leaf(Leaf::Phrase { .. }) => false,
                Analyzed::And { must, .. } => must.iter().any(any),
                Analyzed::Or(alternatives) => alternatives.iter().any(any),
            }
        }
        any(&self.root)
    }

    /// The words of a query of several words (its top-level AND), in order: each may
    /// match in a message's text or in its conversation's contact fields and tags
    /// (`maria pricing`). `None` for a part that is not a single word or phrase (a group
    /// in parentheses). Empty for a query of one part.
    pub(crate) fn contact_parts(&self, fields: &Fields) -> Vec<Option<Box<dyn Query>>> {
        match &self.root {
            Analyzed::And { must, .. } if must.len() >= 2 => must
                .iter()
                .map(|part| match part {
                    Analyzed::Leaf(leaf) => Some(Box::new(BooleanQuery::new(
                        fields
                            .contact()
                            .iter()
                            .map(|&field| {
                                (Occur::Should, leaf_in_field(leaf, (field, false), false))
                            })
                            .collect(),
                    )) as Box<dyn Query>),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The tantivy query: `fuzzy` adds near misses; `contacts[i]`, when given, holds the
    /// conversations (by id) whose contact fields or tags match the i-th part of
    /// [`ParsedQuery::contact_parts`], whose messages then count as matching that part.
    pub(crate) fn compile(
        &self,
        fields: &Fields,
        fuzzy: bool,
        contacts: &[Option<Vec<String>>],
    ) -> Box<dyn Query> {
        let Analyzed::And { must, must_not } = &self.root else {
            return compile(&self.root, fields, fuzzy);
        };
        let conversation_matches = |i: usize| -> Option<Box<dyn Query>> {
            let ids = contacts.get(i)?.as_ref().filter(|ids| !ids.is_empty())?;
            let terms = ids
                .iter()
                .map(|id| Term::from_field_text(fields.conversation, id));
            Some(Box::new(ConstScoreQuery::new(
                Box::new(TermSetQuery::new(terms)),
                CONTACT_PART_SCORE,
            )))
        };
        Box::new(BooleanQuery::new(
            must.iter()
                .enumerate()
                .map(|(i, part)| {
                    let query = compile(part, fields, fuzzy);
                    let query = match conversation_matches(i) {
                        Some(by_contact) => Box::new(BooleanQuery::new(vec![
                            (Occur::Should, query),
                            (Occur::Should, by_contact),
                        ])),
                        None => query,
                    };
                    (Occur::Must, query)
                })
                .chain(
                    must_not
                        .iter()
                        .map(|n| (Occur::MustNot, compile(n, fields, fuzzy))),
                )
                .collect(),
        ))
    }
}

/// The score a message gets for a word found in its conversation's contact instead of
/// its text: about a word's weight in a message.
const CONTACT_PART_SCORE: f32 = 1.0;

fn analyze(node: &Node, terms: &mut usize) -> Result<Option<Analyzed>, QueryError> {
    let mut count = |n: usize| {
        *terms += n;
        if *terms > MAX_TERMS {
            error(format!("the query has more than {MAX_TERMS} terms"))
        } else {
            Ok(())
        }
    };
    Ok(match node {
        Node::Word { text, prefix } => {
            let mut toks = tokens(text);
            count(toks.len())?;
            if *prefix {
                match toks.last() {
                    None => None,
                    Some(last) if last.chars().count() < PREFIX_MIN_CHARS => {
                        return error(format!(
                            "\"{text}*\": a prefix needs at least {PREFIX_MIN_CHARS} letters or digits before *"
                        ))
                    }
                    Some(_) => Some(Analyzed::Leaf(Leaf::Phrase {
                        tokens: toks,
                        prefix: true,
                    })),
                }
            } else if toks.len() == 1 {
                let token = toks.remove(0);
                let fuzzy = token.chars().count() >= FUZZY_MIN_CHARS;
                Some(Analyzed::Leaf(Leaf::Term { token, fuzzy }))
            } else if toks.is_empty() {
                None
            } else {
                Some(Analyzed::Leaf(Leaf::Phrase {
                    tokens: toks,
                    prefix: false,
                }))
            }
        }
        Node::Phrase(text) => {
            let mut toks = tokens(text);
            count(toks.len())?;
            match toks.len() {
                0 => None,
                1 => Some(Analyzed::Leaf(Leaf::Term {
                    token: toks.remove(0),
                    fuzzy: false,
                })),
                _ => Some(Analyzed::Leaf(Leaf::Phrase {
                    tokens: toks,
                    prefix: false,
                })),
            }
        }
        Node::And(items) => {
            let mut must = Vec::new();
            let mut must_not = Vec::new();
            for (negated, item) in items {
                if let Some(analyzed) = analyze(item, terms)? {
                    if *negated {
                        must_not.push(analyzed);
                    } else {
                        must.push(analyzed);
                    }
                }
            }
            if must.is_empty() {
                if must_not.is_empty() {
                    None
                } else {
                    return error("the query only excludes (-word): add something to search for");
                }
            } else if must.len() == 1 && must_not.is_empty() {
                must.pop()
            } else {
                Some(Analyzed::And { must, must_not })
            }
        }
        Node::Or(alternatives) => {
            let mut out = Vec::new();
            for alternative in alternatives {
                if let Some(analyzed) = analyze(alternative, terms)? {
                    out.push(analyzed);
                }
            }
            match out.len() {
                0 => None,
                1 => out.pop(),
                _ => Some(Analyzed::Or(out)),
            }
        }
    })
}

fn collect_highlights(node: &Analyzed, out: &mut Vec<Highlight>) {
    match node {
        Analyzed::All => {}
        Analyzed::Leaf(Leaf::Term { token, fuzzy }) => {
            out.push(Highlight::Exact(token.clone()));
            if *fuzzy {
                out.push(Highlight::Fuzzy(token.clone()));
            }
        }
        Analyzed::Leaf(Leaf::Phrase { tokens, prefix }) => {
            for (i, token) in tokens.iter().enumerate() {
                if *prefix && i + 1 == tokens.len() {
                    out.push(Highlight::Prefix(token.clone()));
                } else {
                    out.push(Highlight::Exact(token.clone()));
                }
            }
        }
        Analyzed::And { must, .. } => must.iter().for_each(|n| collect_highlights(n, out)),
        Analyzed::Or(alternatives) => alternatives.iter().for_each(|n| collect_highlights(n, out)),
    }
}

/// Weight of a near miss relative to the field's boost: exact matches rank first.
const FUZZY_WEIGHT: f32 = 0.3;

fn leaf_in_field(
    leaf: &Leaf,
    (field, field_has_near_misses): (tantivy::schema::Field, bool),
    near: bool,
) -> Box<dyn Query> {
    match leaf {
        Leaf::Term { token, fuzzy } => {
            let term = Term::from_field_text(field, token);
            let exact: Box<dyn Query> =
                Box::new(TermQuery::new(term.clone(), IndexRecordOption::WithFreqs));
            if *fuzzy && near && field_has_near_misses {
                let near: Box<dyn Query> = Box::new(BoostQuery::new(
                    Box::new(FuzzyTermQuery::new(term, 1, true)),
                    FUZZY_WEIGHT,
                ));
                Box::new(BooleanQuery::new(vec![
                    (Occur::Should, exact),
                    (Occur::Should, near),
                ]))
            } else {
                exact
            }
        }
        Leaf::Phrase { tokens, prefix } => {
            let terms: Vec<Term> = tokens
                .iter()
                .map(|t| Term::from_field_text(field, t))
                .collect();
            let phrase: Box<dyn Query> = if *prefix {
                let mut query = PhrasePrefixQuery::new(terms);
                query.set_max_expansions(PREFIX_MAX_EXPANSIONS);
                Box::new(query)
            } else {
                Box::new(PhraseQuery::new(terms))
            };
            Box::new(crate::forward::ForwardOnly(phrase))
        }
    }
}

fn compile(node: &Analyzed, fields: &Fields, near: bool) -> Box<dyn Query> {
    match node {
        Analyzed::All => Box::new(tantivy::query::AllQuery),
        Analyzed::Leaf(leaf) => {
            let per_field = fields
                .searchable()
                .iter()
                .map(|&(field, boost)| {
                    let fuzzy_here = field != fields.email && field != fields.phone;
                    let query: Box<dyn Query> = Box::new(BoostQuery::new(
                        leaf_in_field(leaf, (field, fuzzy_here), near),
                        boost,
                    ));
                    (Occur::Should, query)
                })
                .collect();
            Box::new(BooleanQuery::new(per_field))
        }
        Analyzed::And { must, must_not } => Box::new(BooleanQuery::new(
            must.iter()
                .map(|n| (Occur::Must, compile(n, fields, near)))
                .chain(
                    must_not
                        .iter()
                        .map(|n| (Occur::MustNot, compile(n, fields, near))),
                )
                .collect(),
        )),
        Analyzed::Or(alternatives) => Box::new(BooleanQuery::new(
            alternatives
                .iter()
                .map(|n| (Occur::Should, compile(n, fields, near)))
                .collect(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(q: &str) -> String {
        match ParsedQuery::parse(q) {
            Err(QueryError(why)) => why,
            Ok(parsed) => panic!("{q:?} should be refused, parsed as {parsed:?}"),
        }
    }

    #[test]
    fn words_phrases_prefixes_and_exclusions_parse() {
        let q = ParsedQuery::parse("Acme \"price list\" inv* -spam").expect("parses");
        let highlights = q.highlights();
        assert!(highlights.contains(&Highlight::Exact("acme".into())));
        assert!(highlights.contains(&Highlight::Exact("price".into())));
        assert!(highlights.contains(&Highlight::Prefix("inv".into())));
        assert!(
            !highlights.iter().any(|h| h.matches("spam")),
            "exclusions are not highlighted"
        );
        assert!(ParsedQuery::parse("(invoice OR receipt) acme").is_ok());
        assert!(ParsedQuery::parse("ana@acme.io").is_ok());
        assert!(ParsedQuery::parse("e-mail").is_ok());
    }

    #[test]
    fn syntax_errors_say_why() {
        assert!(refused("\"open").contains("closing quote"));
        assert!(refused("(a b").contains("closing"));
        assert!(refused("a b)").contains("matching"));
        assert!(refused("*acme").contains("wildcard"));
        assert!(refused("ac*me").contains("wildcard"));
        assert!(refused("*").contains("wildcard"));
        assert!(refused("a*").contains("at least 2"));
        assert!(refused("OR acme").contains("OR"));
        assert!(refused("acme OR").contains("OR"));
        assert!(refused("-spam").contains("only excludes"));
        assert!(refused("acme -").contains("-"));
        assert!(refused("   ").contains("empty"));
        assert!(refused("!!! ???").contains("no searchable words"));
        assert!(refused("\"\"").contains("empty"));
        assert!(refused("((((( a )))))").contains("nest"));
    }

    #[test]
    fn hostile_queries_are_bounded() {
        let long = "a".repeat(10 * 1024);
        assert!(refused(&long).contains("characters"));
        let ors = (0..40)
            .map(|i| format!("w{i}"))
            .collect::<Vec<_>>()
            .join(" OR ");
        assert!(refused(&ors).contains("more than 32 terms"));
        let phrase = format!("\"{}\"", vec!["word"; 40].join(" "));
        assert!(refused(&phrase).contains("terms"));
    }

    #[test]
    fn fuzzy_only_for_words_of_five_letters_or_more() {
        let long = ParsedQuery::parse("pricing").expect("parses").highlights();
        assert!(long.iter().any(|h| h.matches("prcing")));
        let short = ParsedQuery::parse("acme").expect("parses").highlights();
        assert!(!short.iter().any(|h| h.matches("acne")));
        let phrase = ParsedQuery::parse("\"pricing\"")
            .expect("parses")
            .highlights();
        assert!(
            !phrase.iter().any(|h| h.matches("prcing")),
            "phrases are exact"
        );
    }

    #[test]
    fn one_edit() {
        assert!(within_one_edit("pricing", "pricing"));
        assert!(within_one_edit("pricing", "prcing"));
        assert!(within_one_edit("pricing", "pricingx"));
        assert!(within_one_edit("pricing", "prizing"));
        assert!(within_one_edit("pricing", "rpicing"));
        assert!(within_one_edit("pricing", "pricign"));
        assert!(!within_one_edit("pricing", "prcign"));
        assert!(!within_one_edit("pricing", "pri"));
        assert!(within_one_edit("", "a"));
    }
}
