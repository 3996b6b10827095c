//! `@mentions` of workspace agents in internal notes.

use crate::ids::AgentId;
use crate::model::Agent;

/// The agents `text` mentions, each once, in the order first mentioned. An agent is
/// mentioned by `@` followed by their full name, their first name, or their email's local
/// part, without regard to case, and not followed by a letter or digit (so `@ana` does not
/// mention "Anabel"). The longest match wins where names overlap.
pub fn mentioned(text: &str, agents: &[Agent]) -> Vec<AgentId> {
    let lower = text.to_lowercase();
    let mut found = Vec::new();
    let mut names: Vec<(String, AgentId)> = Vec::new();
    for agent in agents {
        let full = agent.name.trim().to_lowercase();
        if let Some(first) = full.split_whitespace().next() {
            names.push((first.to_string(), agent.id));
        }
        if !full.is_empty() {
            names.push((full, agent.id));
        }
        if let Some((local, _)) = agent.email.split_once('@') {
            if !local.is_empty() {
                names.push((local.to_lowercase(), agent.id));
            }
        }
    }
    // Longest first, so "@ana lima" beats "@ana" when both are agents.
    names.sort_by_key(|(name, _)| std::cmp::Reverse(name.len()));
    for (at, _) in lower.match_indices('@') {
        let rest = &lower[at + 1..];
        let hit = names.iter().find(|(name, _)| {
            rest.starts_with(name.as_str())
                && !rest[name.len()..]
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_alphanumeric() || c == '_')
        });
        if let Some((_, id)) = hit {
            if !found.contains(id) {
                found.push(*id);
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::WorkspaceId;
    use crate::model::Role;

    fn agent(name: &str, email: &str) -> Agent {
        Agent {
            id: AgentId::new(),
            workspace_id: WorkspaceId::new(),
            name: name.into(),
            email: email.into(),
            role: Role::Agent,
            created_at: 0,
        }
    }

    #[test]
    fn mentions_match_names_first_names_and_email_local_parts() {
        let ana = agent("Ana Lima", "ana@acme.io");
        let bo = agent("Bo Chen", "bchen@acme.io");
        let anabel = agent("Anabel", "anabel@acme.io");
        let agents = vec![ana.clone(), bo.clone(), anabel.clone()];
        assert_eq!(mentioned("@Ana Lima please call", &agents), vec![ana.id]);
        assert_eq!(
            mentioned("cc @bchen and @anabel, @ana.", &agents),
            vec![bo.id, anabel.id, ana.id]
        );
        assert_eq!(mentioned("@ana @ANA @ana", &agents), vec![ana.id]);
        assert!(mentioned("email ana@acme.io or @nobody", &agents).is_empty());
        assert!(mentioned("@anabelle is not anyone", &agents).is_empty());
    }
}
