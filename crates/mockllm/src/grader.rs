//! Deterministic verdicts for Gauntlet's grader prompts, so model-graded
//! assertions can pass and fail on purpose offline.
//!
//! A chat request whose system message starts with
//! `You are Gauntlet's grader for <type> assertions.` (what
//! `gauntlet_core::grading::model` sends) is answered by these rules rather
//! than echoed. The user message holds `<tag>…</tag>` sections. "Covered"
//! below means: when the rubric (criterion, criteria) has double-quoted
//! phrases, every phrase appears in the text, case-insensitively; otherwise
//! every word of it does (words are runs of letters and digits, compared in
//! lower case).
//!
//! - `llm-rubric`: `{"pass", "score", "reason"}`; passes when `<rubric>` is
//!   covered by `<output>`; the score is the covered share.
//! - `model-graded-closedqa`: a line of reasoning, then `Y` when
//!   `<criterion>` is covered by `<answer>`, else `N`.
//! - `factuality`: `{"category", "reason"}` from the word sets of
//!   `<reference>` (R) and `<submission>` (S): `C` when equal, `B` when S
//!   holds all of R, `A` when R holds all of S, else `D` (the only failing
//!   category).
//! - `g-eval`: the planning request (no `<steps>`) gets two fixed steps; the
//!   scoring request gets `{"score", "reason"}` with the score the covered
//!   share of `<criteria>` in `<output>`, rounded to 0–10.
//! - `answer-relevance`: the generated question is the `<answer>` itself,
//!   so relevance is the embedding similarity of the answer and the query.
//! - Any grader request containing `mock:garbled` is answered with prose
//!   no grader can read, to test unreadable answers.

/// How a Gauntlet grader system message starts.
pub const GRADER_MARKER: &str = "You are Gauntlet's grader for ";
/// Put this in a rubric to get an unreadable grader answer.
pub const GARBLED: &str = "mock:garbled";

/// The mock grader's reply, or `None` when `system` is not a Gauntlet
/// grader prompt (the request is then echoed as usual).
pub(crate) fn answer(system: Option<&str>, user: &str) -> Option<String> {
    let task = system?
        .trim_start()
        .strip_prefix(GRADER_MARKER)?
        .split(" assertions")
        .next()?;
    if user.contains(GARBLED) {
        return Some("I would rather not say.".to_owned());
    }
    let section = |tag: &str| section(user, tag).unwrap_or_default();
    Some(match task {
        "llm-rubric" => {
            let (found, total) = coverage(section("rubric"), section("output"));
            let pass = found == total;
            serde_json::json!({
                "reason": format!("The output covers {found} of the rubric's {total} required terms."),
                "pass": pass,
                "score": share(found, total),
            })
            .to_string()
        }
        "model-graded-closedqa" => {
            let (found, total) = coverage(section("criterion"), section("answer"));
            let verdict = if found == total { 'Y' } else { 'N' };
            format!(
                "The answer covers {found} of the criterion's {total} required terms.\n{verdict}"
            )
        }
        "factuality" => {
            let reference = words(section("reference"));
            let submission = words(section("submission"));
            let category = if reference == submission {
                "C"
            } else if reference.is_subset(&submission) {
                "B"
            } else if submission.is_subset(&reference) {
                "A"
            } else {
                "D"
            };
            serde_json::json!({
                "category": category,
                "reason": format!("Compared by words: category {category}."),
            })
            .to_string()
        }
        "g-eval" if user.contains("<steps>") => {
            let (found, total) = coverage(section("criteria"), section("output"));
            let score = (share(found, total) * 10.0).round();
            serde_json::json!({
                "score": score,
                "reason": format!("The output covers {found} of the criteria's {total} required terms."),
            })
            .to_string()
        }
        "g-eval" => serde_json::json!({
            "steps": [
                "Find each term the criteria require in the output",
                "Score the share of required terms present",
            ]
        })
        .to_string(),
        "answer-relevance" => section("answer").trim().to_owned(),
        _ => return None,
    })
}

/// The text between `<tag>` and `</tag>`, trimmed of the newlines around it.
fn section<'a>(text: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = text.find(&open)? + open.len();
    let end = start + text[start..].find(&close)?;
    Some(text[start..end].trim_matches('\n'))
}

fn words(text: &str) -> std::collections::BTreeSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// How many of `spec`'s required terms `text` has, of how many.
fn coverage(spec: &str, text: &str) -> (usize, usize) {
    let quoted: Vec<&str> = spec
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|p| !p.trim().is_empty())
        .collect();
    if quoted.is_empty() {
        let have = words(text);
        let need = words(spec);
        (
            need.iter().filter(|w| have.contains(*w)).count(),
            need.len(),
        )
    } else {
        let lower = text.to_lowercase();
        let found = quoted
            .iter()
            .filter(|p| lower.contains(&p.to_lowercase()))
            .count();
        (found, quoted.len())
    }
}

fn share(found: usize, total: usize) -> f64 {
    if total == 0 {
        1.0
    } else {
        found as f64 / total as f64
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn sys(task: &str) -> String {
        format!("{GRADER_MARKER}{task} assertions.\nInstructions.")
    }

    fn json(reply: &str) -> Value {
        serde_json::from_str(reply).unwrap()
    }

    #[test]
    fn ordinary_requests_are_not_graded() {
        assert_eq!(answer(None, "hello"), None);
        assert_eq!(answer(Some("You are helpful."), "<rubric>x</rubric>"), None);
        assert_eq!(answer(Some(&sys("moderation")), "x"), None);
    }

    #[test]
    fn rubric_passes_when_its_quoted_phrases_or_words_are_covered() {
        let user = |output: &str, rubric: &str| {
            format!("<output>\n{output}\n</output>\n<rubric>\n{rubric}\n</rubric>")
        };
        let pass = json(
            &answer(
                Some(&sys("llm-rubric")),
                &user("ECHO: Paris is lovely", "Names \"paris\""),
            )
            .unwrap(),
        );
        assert_eq!(
            (pass["pass"].clone(), pass["score"].clone()),
            (Value::Bool(true), 1.0.into())
        );
        let fail = json(&answer(Some(&sys("llm-rubric")), &user("Paris", "paris london")).unwrap());
        assert_eq!(fail["pass"], Value::Bool(false));
        assert_eq!(fail["score"], 0.5);
    }

    #[test]
    fn closedqa_ends_with_y_or_n() {
        let user = |answer: &str, criterion: &str| {
            format!(
                "<question>\nq\n</question>\n<answer>\n{answer}\n</answer>\n<criterion>\n{criterion}\n</criterion>"
            )
        };
        let y = answer(
            Some(&sys("model-graded-closedqa")),
            &user("It is Paris.", "paris"),
        )
        .unwrap();
        assert!(y.ends_with("\nY"), "{y}");
        let n = answer(
            Some(&sys("model-graded-closedqa")),
            &user("It is Rome.", "paris"),
        )
        .unwrap();
        assert!(n.ends_with("\nN"), "{n}");
    }

    #[test]
    fn factuality_categories_follow_the_word_sets() {
        let category = |reference: &str, submission: &str| {
            let user = format!(
                "<question>\nq\n</question>\n<reference>\n{reference}\n</reference>\n<submission>\n{submission}\n</submission>"
            );
            json(&answer(Some(&sys("factuality")), &user).unwrap())["category"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        assert_eq!(
            category("Paris is the capital", "paris IS the capital!"),
            "C"
        );
        assert_eq!(category("Paris", "ECHO: Paris"), "B");
        assert_eq!(category("the capital is Paris", "Paris"), "A");
        assert_eq!(category("Paris", "Rome"), "D");
    }

    #[test]
    fn geval_plans_then_scores_out_of_ten() {
        let steps = json(&answer(Some(&sys("g-eval")), "<criteria>\nx\n</criteria>").unwrap());
        assert_eq!(steps["steps"].as_array().unwrap().len(), 2);
        let user = "<criteria>\n\"alpha\" \"beta\" \"gamma\"\n</criteria>\n<steps>\n- s\n</steps>\n<input>\ni\n</input>\n<output>\nalpha beta\n</output>";
        let scored = json(&answer(Some(&sys("g-eval")), user).unwrap());
        assert_eq!(scored["score"], 7.0);
    }

    #[test]
    fn relevance_question_is_the_answer_and_garbled_is_unreadable() {
        let q = answer(
            Some(&sys("answer-relevance")),
            "<answer>\nECHO: What is it?\n</answer>",
        );
        assert_eq!(q.as_deref(), Some("ECHO: What is it?"));
        let garbled = answer(
            Some(&sys("llm-rubric")),
            "<rubric>\nmock:garbled\n</rubric>",
        )
        .unwrap();
        assert!(!garbled.contains('{'));
    }
}
