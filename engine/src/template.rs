//! Composer variables: `{{first_name}}`, `{{last_name}}`, `{{company}}`, `{{title}}`,
//! `{{agent_name}}`, filled from the contact and the sending agent.
//!
//! An unknown variable, or one with no value for this contact, is an error naming it: a
//! message must never go out with a silent blank ("Hi ,").

use crate::model::Contact;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error(
        "unknown variable {{{{{0}}}}}: known are first_name, last_name, company, title, agent_name"
    )]
    Unknown(String),
    #[error("variable {{{{{0}}}}} has no value for this conversation")]
    NoValue(String),
}

/// What variables are filled from.
pub struct Variables<'a> {
    pub contact: &'a Contact,
    pub agent_name: Option<&'a str>,
}

impl Variables<'_> {
    fn value(&self, name: &str) -> Result<Option<String>, TemplateError> {
        let full_name = self.contact.name.as_deref().map(str::trim).unwrap_or("");
        let (first, last) = match full_name.split_once(char::is_whitespace) {
            Some((first, last)) => (first, last.trim()),
            None => (full_name, ""),
        };
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
        Ok(match name {
            "first_name" => non_empty(first),
            "last_name" => non_empty(last),
            "company" => self
                .contact
                .company
                .as_deref()
                .map(str::trim)
                .and_then(non_empty),
            "title" => self
                .contact
                .title
                .as_deref()
                .map(str::trim)
                .and_then(non_empty),
            "agent_name" => self.agent_name.map(str::trim).and_then(non_empty),
            other => return Err(TemplateError::Unknown(other.to_string())),
        })
    }
}

/// The variables a text may use.
pub const VARIABLES: [&str; 5] = ["first_name", "last_name", "company", "title", "agent_name"];

/// The pieces of `text`: literal text, and the (trimmed) name of each `{{ name }}`. An
/// unclosed `{{` and what follows it are literal.
enum Piece<'t> {
    Literal(&'t str),
    Variable(&'t str),
}

fn pieces(text: &str) -> impl Iterator<Item = Piece<'_>> {
    let mut rest = Some(text);
    let mut pending: Option<&str> = None;
    std::iter::from_fn(move || {
        if let Some(name) = pending.take() {
            return Some(Piece::Variable(name));
        }
        let now = rest.take()?;
        let Some((open, close)) = now
            .find("{{")
            .and_then(|open| Some((open, open + 2 + now[open + 2..].find("}}")?)))
        else {
            return Some(Piece::Literal(now));
        };
        pending = Some(now[open + 2..close].trim());
        rest = Some(&now[close + 2..]);
        Some(Piece::Literal(&now[..open]))
    })
}

/// Checks that every `{{ name }}` in `text` is a known variable (for texts stored to be
/// filled later, such as canned replies).
pub fn check(text: &str) -> Result<(), TemplateError> {
    for piece in pieces(text) {
        if let Piece::Variable(name) = piece {
            if !VARIABLES.contains(&name) {
                return Err(TemplateError::Unknown(name.to_string()));
            }
        }
    }
    Ok(())
}

/// Replaces every `{{ name }}` in `text`. Text without `{{` is returned unchanged.
pub fn fill(text: &str, vars: &Variables<'_>) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(text.len());
    for piece in pieces(text) {
        match piece {
            Piece::Literal(literal) => out.push_str(literal),
            Piece::Variable(name) => {
                let value = vars
                    .value(name)?
                    .ok_or_else(|| TemplateError::NoValue(name.to_string()))?;
                out.push_str(&value);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contact() -> Contact {
        Contact {
            name: Some("Ana Maria Lima".into()),
            company: Some("Acme".into()),
            ..Contact::default()
        }
    }

    #[test]
    fn variables_are_filled_from_the_contact_and_agent() {
        let c = contact();
        let vars = Variables {
            contact: &c,
            agent_name: Some("Bo"),
        };
        assert_eq!(
            fill(
                "Hi {{first_name}} {{ last_name }} of {{company}}, {{agent_name}} here",
                &vars
            ),
            Ok("Hi Ana Maria Lima of Acme, Bo here".into())
        );
        assert_eq!(
            fill("no variables {single}", &vars),
            Ok("no variables {single}".into())
        );
        assert_eq!(
            fill("unclosed {{first_name", &vars),
            Ok("unclosed {{first_name".into())
        );
    }

    #[test]
    fn stored_texts_are_checked_against_the_variables_that_fill() {
        let vars = Variables {
            contact: &contact(),
            agent_name: Some("Ana"),
        };
        for name in VARIABLES {
            assert!(vars.value(name).is_ok(), "{name} fills");
            assert_eq!(check(&format!("Hi {{{{ {name} }}}}")), Ok(()));
        }
        assert_eq!(
            check("Hi {{first_name}}, about {{nickname}}"),
            Err(TemplateError::Unknown("nickname".into()))
        );
        assert_eq!(check("no variables, {{ unclosed"), Ok(()));
    }

    #[test]
    fn unknown_and_empty_variables_are_errors_naming_them() {
        let c = contact();
        let vars = Variables {
            contact: &c,
            agent_name: None,
        };
        assert_eq!(
            fill("{{nickname}}", &vars),
            Err(TemplateError::Unknown("nickname".into()))
        );
        assert_eq!(
            fill("{{title}}", &vars),
            Err(TemplateError::NoValue("title".into()))
        );
        assert_eq!(
            fill("{{agent_name}}", &vars),
            Err(TemplateError::NoValue("agent_name".into()))
        );
        let message = TemplateError::Unknown("nickname".into()).to_string();
        assert!(
            message.starts_with("unknown variable {{nickname}}"),
            "{message}"
        );
    }
}
