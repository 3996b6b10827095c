//! The built-in backend: offline, deterministic, no model. Intents come from keyword
//! rules (English, Portuguese, Spanish); answers come only from the knowledge base, or
//! from the workspace's fixed phrases for greetings and thanks. It never invents a fact:
//! when nothing relevant scores above the threshold, it escalates.

use confab_engine::ai::{fold, AiConfig};
use confab_index::KnowledgeHit;

/// What the lead wants, and how sure the rules are (0 to 1).
#[derive(Clone, Debug, PartialEq)]
pub struct Intent {
    pub name: &'static str,
    pub confidence: f64,
}

/// Intents with their words and phrases, in order of precedence.
const INTENTS: &[(&str, &[&str])] = &[
    (
        "opt_out",
        &[
            "stop",
            "unsubscribe",
            "opt out",
            "remove me",
            "do not contact",
            "dont contact",
            "don't contact",
            "stop messaging",
            "descadastrar",
            "nao quero mais",
            "parem",
            "pare de",
            "no me escriban",
            "darme de baja",
        ],
    ),
    (
        "human_request",
        &[
            "human",
            "real person",
            "talk to someone",
            "speak to someone",
            "speak to a person",
            "talk to a person",
            "representative",
            "an agent",
            "a person",
            "atendente",
            "humano",
            "falar com alguem",
            "falar com uma pessoa",
            "una persona",
            "un agente",
        ],
    ),
    (
        "complaint",
        &[
            "complaint",
            "terrible",
            "awful",
            "angry",
            "refund",
            "not working",
            "doesn't work",
            "doesnt work",
            "broken",
            "scam",
            "worst",
            "unacceptable",
            "reclamacao",
            "pessimo",
            "horrivel",
            "reembolso",
            "nao funciona",
            "queja",
            "estafa",
        ],
    ),
    (
        "out_of_office",
        &[
            "out of office",
            "out of the office",
            "automatic reply",
            "auto-reply",
            "autoreply",
            "auto reply",
            "i am away",
            "i'm away",
            "on vacation",
            "resposta automatica",
            "fora do escritorio",
            "respuesta automatica",
        ],
    ),
    (
        "meeting_request",
        &[
            "meeting",
            "schedule a call",
            "book a call",
            "a call",
            "demo",
            "appointment",
            "calendar",
            "reuniao",
            "agendar",
            "ligacao",
            "llamada",
            "reunion",
            "cita",
        ],
    ),
    (
        "pricing",
        &[
            "price",
            "pricing",
            "cost",
            "costs",
            "how much",
            "quote",
            "fee",
            "fees",
            "discount",
            "preco",
            "precos",
            "quanto custa",
            "valor",
            "precio",
            "cuanto",
            "cuesta",
        ],
    ),
    (
        "thanks",
        &[
            "thanks",
            "thank you",
            "thx",
            "obrigado",
            "obrigada",
            "gracias",
            "valeu",
        ],
    ),
    (
        "greeting",
        &[
            "hi",
            "hello",
            "hey",
            "good morning",
            "good afternoon",
            "good evening",
            "oi",
            "ola",
            "bom dia",
            "boa tarde",
            "boa noite",
            "hola",
            "buenos dias",
            "buenas tardes",
        ],
    ),
];

/// Whether `phrase` occurs in `folded` as whole words.
fn has_phrase(folded: &str, phrase: &str) -> bool {
    let bytes = folded.as_bytes();
    let mut from = 0;
    while let Some(at) = folded[from..].find(phrase) {
        let start = from + at;
        let end = start + phrase.len();
        let before = start == 0 || !bytes[start - 1].is_ascii_alphanumeric();
        let after = end == bytes.len() || !bytes[end].is_ascii_alphanumeric();
        if before && after {
            return true;
        }
        from = start + 1;
        if from >= folded.len() {
            break;
        }
        while !folded.is_char_boundary(from) {
            from += 1;
        }
    }
    false
}

/// The lead's intent in `text`.
pub fn intent(text: &str) -> Intent {
    let folded = fold(text);
    let words = folded
        .split(|c: char| !c.is_alphanumeric() && c != '\'')
        .filter(|w| !w.is_empty())
        .count();
    for (name, phrases) in INTENTS {
        let Some(phrase) = phrases.iter().find(|p| has_phrase(&folded, p)) else {
            continue;
        };
        // Thanks and greetings stand alone; a longer message is about something else.
        if matches!(*name, "thanks" | "greeting") && words > 6 {
            continue;
        }
        let confidence = if phrase.contains(' ') { 0.9 } else { 0.8 };
        return Intent { name, confidence };
    }
    if folded.contains('?') {
        return Intent {
            name: "question",
            confidence: 0.6,
        };
    }
    Intent {
        name: "other",
        confidence: 0.3,
    }
}

/// The reasoning of the clarifying question: also how the agent knows it asked it.
pub const CLARIFY_WHY: &str =
    "not a question the knowledge base answers: asked what the lead wants to know (once)";

/// What the built-in backend proposes.
#[derive(Clone, Debug, PartialEq)]
pub enum Proposal {
    Reply {
        text: String,
        confidence: f64,
        why: String,
    },
    Escalate {
        why: String,
        confidence: f64,
    },
    /// No answer is due (an automatic reply).
    Nothing {
        why: String,
    },
}

/// Decides on the lead's `text`, given the knowledge retrieved for it. `clarified`: the
/// agent already asked its clarifying question in this conversation.
pub fn decide(
    config: &AiConfig,
    intent: &Intent,
    knowledge: &[KnowledgeHit],
    clarified: bool,
) -> Proposal {
    match intent.name {
        "out_of_office" => Proposal::Nothing {
            why: "an automatic reply (out of office): nothing to answer".into(),
        },
        "opt_out" => Proposal::Escalate {
            why: "the lead asked not to be contacted: the AI stops".into(),
            confidence: intent.confidence,
        },
        "human_request" => Proposal::Escalate {
            why: "the lead asked for a person".into(),
            confidence: intent.confidence,
        },
        "complaint" => Proposal::Escalate {
            why: "a complaint: a person should answer".into(),
            confidence: intent.confidence,
        },
        "greeting" => Proposal::Reply {
            text: config.phrases.greeting.clone(),
            confidence: intent.confidence,
            why: "a greeting: answered with the workspace's greeting phrase".into(),
        },
        "thanks" => Proposal::Reply {
            text: config.phrases.thanks.clone(),
            confidence: intent.confidence,
            why: "thanks: answered with the workspace's phrase".into(),
        },
        _ => match knowledge.first() {
            Some(best) if best.score >= config.confidence_threshold => Proposal::Reply {
                text: best.text.clone(),
                confidence: best.score,
                why: format!(
                    "answered from \"{}\", which covers {:.0} % of the question",
                    best.title,
                    best.score * 100.0
                ),
            },
            // A statement (not a question) the knowledge does not cover: ask once what
            // the lead wants to know, rather than hand over at the first words.
            best if intent.name == "other"
                && !clarified
                && best.is_none_or(|b| b.score < config.confidence_threshold) =>
            {
                Proposal::Reply {
                    text: config.phrases.clarify.clone(),
                    confidence: intent.confidence,
                    why: CLARIFY_WHY.into(),
                }
            }
            Some(best) => Proposal::Escalate {
                why: format!(
                    "no knowledge answers it well enough: the best match, \"{}\", covers {:.0} % (threshold {:.0} %)",
                    best.title,
                    best.score * 100.0,
                    config.confidence_threshold * 100.0
                ),
                confidence: best.score,
            },
            None => Proposal::Escalate {
                why: "nothing in the knowledge base matches the question".into(),
                confidence: 0.0,
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intents_by_rule() {
        let cases = [
            ("Hi!", "greeting"),
            ("Olá, bom dia", "greeting"),
            ("How much does the Pro plan cost?", "pricing"),
            ("Quanto custa o plano anual?", "pricing"),
            ("Can we book a call for Tuesday?", "meeting_request"),
            ("I want to talk to a real person", "human_request"),
            ("STOP", "opt_out"),
            ("This is terrible, I want a refund", "complaint"),
            (
                "Automatic reply: I am out of office until Monday",
                "out_of_office",
            ),
            ("Thanks!", "thanks"),
            ("Do you integrate with Salesforce?", "question"),
            ("ok", "other"),
            // Words inside other words do not count.
            ("Please hire more staff", "other"),
        ];
        for (text, expected) in cases {
            assert_eq!(intent(text).name, expected, "{text}");
        }
        assert!(
            intent("Hi, I have a long question about onboarding and the integrations you offer")
                .name
                != "greeting"
        );
    }

    #[test]
    fn answers_come_only_from_knowledge_above_the_threshold() {
        let config = AiConfig::default();
        let hit = |score: f64| KnowledgeHit {
            article: confab_engine::ids::ArticleId::new(),
            title: "Pricing".into(),
            text: "The Pro plan costs 49 dollars.".into(),
            score,
        };
        let pricing = intent("How much is Pro?");
        match decide(&config, &pricing, &[hit(0.8)], false) {
            Proposal::Reply { text, .. } => assert_eq!(text, "The Pro plan costs 49 dollars."),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decide(&config, &pricing, &[hit(0.2)], false),
            Proposal::Escalate { .. }
        ));
        assert!(matches!(
            decide(&config, &pricing, &[], false),
            Proposal::Escalate { .. }
        ));
        assert!(matches!(
            decide(&config, &intent("STOP"), &[hit(0.9)], false),
            Proposal::Escalate { .. }
        ));
        assert!(matches!(
            decide(&config, &intent("Auto-reply: on vacation"), &[], false),
            Proposal::Nothing { .. }
        ));
        // A statement gets the clarifying question once, then goes to a person.
        let statement = intent("We are a dental clinic with three locations");
        match decide(&config, &statement, &[hit(0.1)], false) {
            Proposal::Reply { text, .. } => assert_eq!(text, config.phrases.clarify),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decide(&config, &statement, &[hit(0.1)], true),
            Proposal::Escalate { .. }
        ));
    }
}
