//! The normalized suite model: what a run executes. It is stored as JSON with
//! the run and re-read by workers, so a task is just an index into it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A validated suite: every prompt compiles, every test defines the vars its
/// prompts use, `defaultTest` is merged into each test, array vars are expanded
/// and assertion values are already rendered with their test's vars.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Suite {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub prompts: Vec<Prompt>,
    pub providers: Vec<ProviderSpec>,
    pub tests: Vec<TestCase>,
    /// Available to templates as `env`.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// promptfoo's `evaluateOptions.maxConcurrency`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    /// promptfoo's `evaluateOptions.repeat`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prompt {
    /// The id given in the suite, or a hash of `raw` (unique within the suite).
    pub id: String,
    pub label: String,
    /// The Nunjucks template.
    pub raw: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderSpec {
    /// As written in the suite (`openai:gpt-4.1`); the providers crate normalizes it.
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default)]
    pub config: Map<String, Value>,
}

impl ProviderSpec {
    /// What reports and comparisons call it: its label, else its id.
    pub fn name(&self) -> &str {
        self.label.as_deref().unwrap_or(&self.id)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestCase {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub vars: BTreeMap<String, Value>,
    #[serde(default, deserialize_with = "exact_vec")]
    pub assert: Vec<Assertion>,
    /// When set, the test passes if the weighted score reaches it, whatever
    /// individual assertions say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assertion {
    pub kind: AssertionKind,
    /// promptfoo's `not-` prefix.
    #[serde(default)]
    pub negate: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    #[serde(default = "default_weight")]
    pub weight: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// The members of an `assert-set` (empty for every other kind).
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "exact_vec"
    )]
    pub assert: Vec<Assertion>,
    /// Who grades a model-graded assertion: its own `provider`, else its
    /// test's `options.provider`, else `defaultTest`'s (the parser resolves
    /// this); `None` means the default graders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<GraderSpec>,
}

/// promptfoo's grading `provider`: one provider for every kind of grading
/// call, or a `{text, embedding}` map. A kind left unset uses the default
/// grader for it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GraderSpec {
    /// Answers grader prompts (every model-graded type except `similar`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<ProviderSpec>,
    /// Embeds texts (`similar`, `answer-relevance`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding: Option<ProviderSpec>,
}

fn default_weight() -> f64 {
    1.0
}

impl Assertion {
    pub fn new(kind: AssertionKind, value: Option<Value>) -> Self {
        Self {
            kind,
            negate: false,
            value,
            weight: 1.0,
            threshold: None,
            metric: None,
            assert: Vec::new(),
            provider: None,
        }
    }

    /// The promptfoo type string including the `not-` prefix.
    pub fn type_name(&self) -> String {
        if self.negate {
            format!("not-{}", self.kind.name())
        } else {
            self.kind.name().to_owned()
        }
    }
}

/// The assertion types Gauntlet grades.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AssertionKind {
    Equals,
    Contains,
    Icontains,
    ContainsAny,
    ContainsAll,
    IcontainsAny,
    IcontainsAll,
    StartsWith,
    Regex,
    IsJson,
    Latency,
    Cost,
    WordCount,
    Levenshtein,
    FinishReason,
    ContainsJson,
    IsXml,
    ContainsXml,
    IsHtml,
    ContainsHtml,
    IsSql,
    ContainsSql,
    RougeN,
    Bleu,
    Gleu,
    IsRefusal,
    IsValidOpenaiToolsCall,
    IsValidOpenaiFunctionCall,
    LlmRubric,
    ModelGradedClosedqa,
    Factuality,
    GEval,
    AnswerRelevance,
    Similar,
    #[serde(rename = "similar:cosine")]
    SimilarCosine,
    #[serde(rename = "similar:dot")]
    SimilarDot,
    #[serde(rename = "similar:euclidean")]
    SimilarEuclidean,
    /// promptfoo's `assert-set`: a group graded as one assertion.
    AssertSet,
}

impl AssertionKind {
    pub const ALL: [AssertionKind; 38] = [
        Self::Equals,
        Self::Contains,
        Self::Icontains,
        Self::ContainsAny,
        Self::ContainsAll,
        Self::IcontainsAny,
        Self::IcontainsAll,
        Self::StartsWith,
        Self::Regex,
        Self::IsJson,
        Self::Latency,
        Self::Cost,
        Self::WordCount,
        Self::Levenshtein,
        Self::FinishReason,
        Self::ContainsJson,
        Self::IsXml,
        Self::ContainsXml,
        Self::IsHtml,
        Self::ContainsHtml,
        Self::IsSql,
        Self::ContainsSql,
        Self::RougeN,
        Self::Bleu,
        Self::Gleu,
        Self::IsRefusal,
        Self::IsValidOpenaiToolsCall,
        Self::IsValidOpenaiFunctionCall,
        Self::LlmRubric,
        Self::ModelGradedClosedqa,
        Self::Factuality,
        Self::GEval,
        Self::AnswerRelevance,
        Self::Similar,
        Self::SimilarCosine,
        Self::SimilarDot,
        Self::SimilarEuclidean,
        Self::AssertSet,
    ];

    /// The promptfoo type string (`icontains-any`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Equals => "equals",
            Self::Contains => "contains",
            Self::Icontains => "icontains",
            Self::ContainsAny => "contains-any",
            Self::ContainsAll => "contains-all",
            Self::IcontainsAny => "icontains-any",
            Self::IcontainsAll => "icontains-all",
            Self::StartsWith => "starts-with",
            Self::Regex => "regex",
            Self::IsJson => "is-json",
            Self::Latency => "latency",
            Self::Cost => "cost",
            Self::WordCount => "word-count",
            Self::Levenshtein => "levenshtein",
            Self::FinishReason => "finish-reason",
            Self::ContainsJson => "contains-json",
            Self::IsXml => "is-xml",
            Self::ContainsXml => "contains-xml",
            Self::IsHtml => "is-html",
            Self::ContainsHtml => "contains-html",
            Self::IsSql => "is-sql",
            Self::ContainsSql => "contains-sql",
            Self::RougeN => "rouge-n",
            Self::Bleu => "bleu",
            Self::Gleu => "gleu",
            Self::IsRefusal => "is-refusal",
            Self::IsValidOpenaiToolsCall => "is-valid-openai-tools-call",
            Self::IsValidOpenaiFunctionCall => "is-valid-openai-function-call",
            Self::LlmRubric => "llm-rubric",
            Self::ModelGradedClosedqa => "model-graded-closedqa",
            Self::Factuality => "factuality",
            Self::GEval => "g-eval",
            Self::AnswerRelevance => "answer-relevance",
            Self::Similar => "similar",
            Self::SimilarCosine => "similar:cosine",
            Self::SimilarDot => "similar:dot",
            Self::SimilarEuclidean => "similar:euclidean",
            Self::AssertSet => "assert-set",
        }
    }

    /// Whether a grading model answers for this type (see `grading::model`).
    pub fn is_model_graded(self) -> bool {
        matches!(
            self,
            Self::LlmRubric
                | Self::ModelGradedClosedqa
                | Self::Factuality
                | Self::GEval
                | Self::AnswerRelevance
                | Self::Similar
                | Self::SimilarCosine
                | Self::SimilarDot
                | Self::SimilarEuclidean
        )
    }

    /// Inverse of [`AssertionKind::name`]; `not-` prefixes are not accepted here.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

/// One task of a run: which test, prompt, provider and repetition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TaskCoord {
    pub test: u32,
    pub prompt: u32,
    pub provider: u32,
    pub repeat: u32,
}

impl Suite {
    /// Number of tasks for `repeat` repetitions (a `repeat` of 0 counts as 1,
    /// so an unset protobuf field still runs the suite once). Saturates at
    /// `u64::MAX`.
    pub fn task_count(&self, repeat: u32) -> u64 {
        self.shape(repeat).count()
    }

    /// The task at `index`; see [`TaskShape::task`].
    pub fn task(&self, index: u64, repeat: u32) -> Option<TaskCoord> {
        self.shape(repeat).task(index)
    }

    /// Inverse of [`Suite::task`]; `coord` must lie inside the suite.
    pub fn task_index(&self, coord: &TaskCoord) -> u64 {
        self.shape(1).index(coord)
    }

    /// The shape of a run of this suite with its tests held here.
    pub fn shape(&self, repeat: u32) -> TaskShape {
        self.shape_with(self.tests.len() as u64, repeat)
    }

    /// The shape of a run of this suite's prompts and providers over
    /// `tests` tests stored elsewhere (a stored run keeps them as rows).
    pub fn shape_with(&self, tests: u64, repeat: u32) -> TaskShape {
        TaskShape {
            tests,
            prompts: self.prompts.len() as u64,
            providers: self.providers.len() as u64,
            repeat: repeat.max(1),
        }
    }
}

/// How a run's task indexes map to tests, prompts, providers and repeats:
/// all a task needs to know of its run besides its own test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskShape {
    pub tests: u64,
    pub prompts: u64,
    pub providers: u64,
    /// At least 1.
    pub repeat: u32,
}

impl TaskShape {
    /// Number of tasks.
    pub fn count(&self) -> u64 {
        self.tests
            .saturating_mul(self.prompts)
            .saturating_mul(self.providers)
            .saturating_mul(u64::from(self.repeat.max(1)))
    }

    /// The task at `index`. Indices run repeat-major, then test, then prompt,
    /// then provider (the provider varies fastest), so a contiguous batch of
    /// indices sends the same rendered prompt to every provider, and needs
    /// a contiguous range of tests.
    pub fn task(&self, index: u64) -> Option<TaskCoord> {
        if index >= self.count() {
            return None;
        }
        let provider = index % self.providers;
        let rest = index / self.providers;
        let prompt = rest % self.prompts;
        let rest = rest / self.prompts;
        let test = rest % self.tests;
        let rep = rest / self.tests;
        Some(TaskCoord {
            test: test as u32,
            prompt: prompt as u32,
            provider: provider as u32,
            repeat: rep as u32,
        })
    }

    /// Inverse of [`TaskShape::task`]; `coord` must lie inside the shape.
    pub fn index(&self, coord: &TaskCoord) -> u64 {
        ((u64::from(coord.repeat) * self.tests + u64::from(coord.test)) * self.prompts
            + u64::from(coord.prompt))
            * self.providers
            + u64::from(coord.provider)
    }
}

/// A list read back without growth slack: a `Vec` grown one element at a
/// time reserves four, and assertions are a few hundred bytes, which over a
/// 20,000-test suite is megabytes a worker would hold for the whole run.
fn exact_vec<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    let mut items = Vec::<T>::deserialize(deserializer)?;
    items.shrink_to_fit();
    Ok(items)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn suite(tests: usize, prompts: usize, providers: usize) -> Suite {
        Suite {
            description: None,
            prompts: (0..prompts)
                .map(|i| Prompt {
                    id: format!("p{i}"),
                    label: format!("p{i}"),
                    raw: format!("prompt {i}"),
                })
                .collect(),
            providers: (0..providers)
                .map(|i| ProviderSpec {
                    id: format!("echo:{i}"),
                    label: None,
                    config: Map::new(),
                })
                .collect(),
            tests: (0..tests)
                .map(|_| TestCase {
                    description: None,
                    vars: BTreeMap::new(),
                    assert: Vec::new(),
                    threshold: None,
                    metadata: Map::new(),
                })
                .collect(),
            env: BTreeMap::new(),
            max_concurrency: None,
            repeat: None,
        }
    }

    #[test]
    fn provider_varies_fastest_then_prompt_then_test_then_repeat() {
        let s = suite(2, 3, 2);
        assert_eq!(s.task_count(2), 24);
        let coord = |i| s.task(i, 2).unwrap();
        assert_eq!(
            coord(0),
            TaskCoord {
                test: 0,
                prompt: 0,
                provider: 0,
                repeat: 0
            }
        );
        assert_eq!(coord(1).provider, 1);
        assert_eq!((coord(2).prompt, coord(2).provider), (1, 0));
        assert_eq!((coord(6).test, coord(6).prompt), (1, 0));
        assert_eq!((coord(12).repeat, coord(12).test), (1, 0));
        assert_eq!(
            coord(23),
            TaskCoord {
                test: 1,
                prompt: 2,
                provider: 1,
                repeat: 1
            }
        );
        assert_eq!(s.task(24, 2), None);
    }

    #[test]
    fn zero_repeat_runs_once() {
        let s = suite(2, 2, 2);
        assert_eq!(s.task_count(0), s.task_count(1));
        assert!(s.task(7, 0).is_some());
        assert!(s.task(8, 0).is_none());
    }

    #[test]
    fn empty_suite_has_no_tasks() {
        let s = suite(0, 2, 2);
        assert_eq!(s.task_count(3), 0);
        assert_eq!(s.task(0, 3), None);
    }

    #[test]
    fn assertion_kind_names_round_trip_and_match_serde() {
        for kind in AssertionKind::ALL {
            assert_eq!(AssertionKind::from_name(kind.name()), Some(kind));
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                Value::String(kind.name().to_owned())
            );
        }
        assert_eq!(AssertionKind::from_name("not-contains"), None);
    }

    #[test]
    fn assertion_deserializes_with_promptfoo_defaults() {
        let a: Assertion =
            serde_json::from_value(serde_json::json!({"kind": "icontains", "value": "x"})).unwrap();
        assert_eq!(a.weight, 1.0);
        assert!(!a.negate);
        assert_eq!(a.type_name(), "icontains");
    }

    proptest! {
        #[test]
        fn task_index_round_trips(
            tests in 1usize..6, prompts in 1usize..6, providers in 1usize..6,
            repeat in 0u32..4, seed in any::<u64>(),
        ) {
            let s = suite(tests, prompts, providers);
            let count = s.task_count(repeat);
            let index = seed % count;
            let coord = s.task(index, repeat).unwrap();
            prop_assert!((coord.test as usize) < tests);
            prop_assert!((coord.prompt as usize) < prompts);
            prop_assert!((coord.provider as usize) < providers);
            prop_assert!(coord.repeat < repeat.max(1));
            prop_assert_eq!(s.task_index(&coord), index);
        }
    }
}
