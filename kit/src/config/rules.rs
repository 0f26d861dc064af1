//! Rules between settings that no single field can state but the code relies on.
//! Each binary checks the rules whose lower key it owns when it loads
//! (`Config::validate`), so a bad combination fails at startup with both keys named,
//! instead of showing up as timeouts under load.

/// `lower` must stay below `upper` (or at most equal, when built with `at_most`).
pub struct Rule {
    lower: (&'static str, u64),
    upper: (&'static str, u64),
    or_equal: bool,
    /// What goes wrong otherwise.
    why: &'static str,
}

impl Rule {
    pub fn below(lower: (&'static str, u64), upper: (&'static str, u64), why: &'static str) -> Self {
        Self { lower, upper, or_equal: false, why }
    }

    pub fn at_most(lower: (&'static str, u64), upper: (&'static str, u64), why: &'static str) -> Self {
        Self { lower, upper, or_equal: true, why }
    }

    /// The broken rule in words, both keys and values named; `None` while it holds.
    pub fn violation(&self) -> Option<String> {
        let ((low_key, low), (up_key, up)) = (self.lower, self.upper);
        let holds = if self.or_equal { low <= up } else { low < up };
        let relation = if self.or_equal { "at most" } else { "below" };
        (!holds).then(|| format!("{low_key} ({low}) must be {relation} {up_key} ({up}): {}", self.why))
    }
}

/// Checks every rule; the error names each one violated, all at once.
pub fn check(rules: &[Rule]) -> anyhow::Result<()> {
    let violations: Vec<String> = rules.iter().filter_map(Rule::violation).collect();
    anyhow::ensure!(violations.is_empty(), "{}", violations.join("; "));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_names_both_keys_and_why() {
        let rule = Rule::below(("a.wait_ms", 5), ("b.deadline_ms", 5), "a would time out");
        assert_eq!(
            rule.violation().as_deref(),
            Some("a.wait_ms (5) must be below b.deadline_ms (5): a would time out")
        );
        assert!(Rule::at_most(("a.first_ms", 5), ("a.max_ms", 5), "").violation().is_none());
        assert!(Rule::below(("a.wait_ms", 4), ("b.deadline_ms", 5), "").violation().is_none());
    }

    #[test]
    fn every_violation_is_reported_at_once() {
        let error = check(&[
            Rule::below(("a", 2), ("b", 1), "x"),
            Rule::below(("c", 0), ("d", 1), "y"),
            Rule::at_most(("e", 3), ("f", 2), "z"),
        ])
        .unwrap_err()
        .to_string();
        assert!(error.contains("a (2)") && error.contains("e (3)") && !error.contains("c (0)"), "{error}");
    }
}
