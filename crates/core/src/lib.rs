//! Gauntlet's pure domain: the suite model, promptfoo-compatible parsing and
//! validation, prompt templating, graders and statistics. No I/O happens here;
//! files referenced by a suite come in through [`parse::FileResolver`].

pub mod error;
pub mod grading;
mod js;
pub mod parse;
pub mod stats;
pub mod suite;
pub mod template;

pub use error::{SuiteError, TemplateError};
pub use grading::{AssertionOutcome, Grade, ProviderOutput, grade};
pub use parse::{
    FileResolver, NoFiles, SuiteFormat, SuiteStream, parse_suite, parse_suite_stream,
    parse_suite_with,
};
pub use stats::{LatencySummary, pass_rate, percentile};
pub use suite::{Assertion, AssertionKind, Prompt, ProviderSpec, Suite, TaskCoord, TestCase};
pub use template::PromptRenderer;
