//! The outcome of `pfsyncd check`: one line per step, as text or one JSON object.

use serde_json::{json, Value};

/// How a step came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// It works as the daemon needs it.
    Ok,
    /// It does not: the daemon would fail, or sync wrongly.
    Fail,
    /// It does not apply here (the detail says why).
    Skip,
}

impl Status {
    /// As printed: `ok`, `FAIL`, `skip`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Fail => "FAIL",
            Status::Skip => "skip",
        }
    }
}

/// One kernel interaction the daemon needs, tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// What was tried (`/dev/pf`, `syncdev`, …).
    pub name: &'static str,
    /// How it came out.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do about a failure.
    pub remedy: Option<String>,
}

impl Step {
    /// A step that passed.
    pub fn ok(name: &'static str, detail: impl Into<String>) -> Step {
        Step {
            name,
            status: Status::Ok,
            detail: detail.into(),
            remedy: None,
        }
    }

    /// A step that failed, with its remedy.
    pub fn fail(name: &'static str, detail: impl Into<String>, remedy: impl Into<String>) -> Step {
        Step {
            name,
            status: Status::Fail,
            detail: detail.into(),
            remedy: Some(remedy.into()),
        }
    }

    /// A step that does not apply, and why.
    pub fn skip(name: &'static str, why: impl Into<String>) -> Step {
        Step {
            name,
            status: Status::Skip,
            detail: why.into(),
            remedy: None,
        }
    }
}

/// Every step, in the order tried.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The steps.
    pub steps: Vec<Step>,
}

impl Report {
    /// Adds a step.
    pub fn push(&mut self, step: Step) {
        self.steps.push(step);
    }

    /// True when no step failed.
    pub fn passed(&self) -> bool {
        self.steps.iter().all(|s| s.status != Status::Fail)
    }

    /// One line per step (a failure's remedy indented below it), then the verdict.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for s in &self.steps {
            out.push_str(&format!(
                "{:<5} {}: {}\n",
                s.status.as_str(),
                s.name,
                s.detail
            ));
            if let Some(remedy) = &s.remedy {
                out.push_str(&format!("      remedy: {remedy}\n"));
            }
        }
        let failed = self
            .steps
            .iter()
            .filter(|s| s.status == Status::Fail)
            .count();
        if failed == 0 {
            out.push_str("pfsyncd check: every step passed\n");
        } else {
            out.push_str(&format!("pfsyncd check: {failed} step(s) failed\n"));
        }
        out
    }

    /// `{"passed": bool, "steps": [{"name", "status", "detail", "remedy"}]}`.
    pub fn json(&self) -> Value {
        let steps: Vec<Value> = self
            .steps
            .iter()
            .map(|s| {
                json!({
                    "name": s.name,
                    "status": s.status.as_str(),
                    "detail": s.detail,
                    "remedy": s.remedy,
                })
            })
            .collect();
        json!({ "passed": self.passed(), "steps": steps })
    }
}
