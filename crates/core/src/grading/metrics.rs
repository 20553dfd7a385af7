//! Reference-overlap scores: `bleu`, `gleu` and `rouge-n`, computed the way
//! promptfoo 0.121 computes them (its own BLEU and GLEU, and ROUGE-N as an F1
//! of clipped unigram counts over js-rouge's Penn Treebank tokens).

use std::collections::HashMap;

/// JavaScript's `s.toLowerCase().trim().split(/\s+/)`: an empty string
/// yields one empty word, as in JavaScript.
fn js_words(text: &str) -> Vec<String> {
    let lower = text.to_lowercase();
    let trimmed = lower.trim();
    if trimmed.is_empty() {
        return vec![String::new()];
    }
    trimmed.split_whitespace().map(str::to_owned).collect()
}

fn ngrams(words: &[String], n: usize) -> Vec<String> {
    if n == 0 || n > words.len() {
        return Vec::new();
    }
    words.windows(n).map(|w| w.join(" ")).collect()
}

fn counts(grams: &[String]) -> HashMap<&str, usize> {
    let mut map = HashMap::new();
    for gram in grams {
        *map.entry(gram.as_str()).or_insert(0) += 1;
    }
    map
}

/// Σ min(count in candidate, count in reference) over the candidate's grams.
fn clipped_overlap(candidate: &[String], reference: &[String]) -> usize {
    let reference = counts(reference);
    counts(candidate)
        .into_iter()
        .map(|(gram, count)| count.min(reference.get(gram).copied().unwrap_or(0)))
        .sum()
}

/// BLEU-4 with uniform weights, a brevity penalty against the reference whose
/// length is closest to the candidate's (the shorter on a tie), and zero
/// precisions smoothed to 1e-7. Orders longer than the candidate are left
/// out and the remaining weights renormalized.
pub(crate) fn bleu(candidate: &str, references: &[String]) -> f64 {
    if candidate.trim().is_empty() || references.is_empty() {
        return 0.0;
    }
    let cand = js_words(candidate);
    let refs: Vec<Vec<String>> = references.iter().map(|r| js_words(r)).collect();
    let c = cand.len();
    let closest = refs
        .iter()
        .map(Vec::len)
        .reduce(|prev, curr| {
            let (dc, dp) = (curr.abs_diff(c), prev.abs_diff(c));
            if dc < dp || (dc == dp && curr < prev) {
                curr
            } else {
                prev
            }
        })
        .unwrap_or(0);
    let mut orders = Vec::new();
    for n in 1..=4 {
        let grams = ngrams(&cand, n);
        if grams.is_empty() {
            continue;
        }
        let best = refs
            .iter()
            .map(|r| clipped_overlap(&grams, &ngrams(r, n)))
            .max()
            .unwrap_or(0);
        orders.push((best as f64 / grams.len() as f64, 0.25));
    }
    let brevity = if c > closest {
        1.0
    } else {
        (1.0 - closest as f64 / c as f64).exp()
    };
    let weight_sum: f64 = orders.iter().map(|(_, w)| w).sum();
    if weight_sum == 0.0 {
        return 0.0;
    }
    let log_sum: f64 = orders
        .iter()
        .map(|(p, w)| w / weight_sum * if *p == 0.0 { 1e-7_f64 } else { *p }.ln())
        .sum();
    brevity * log_sum.exp()
}

/// Google-BLEU: over all 1- to 4-grams, min(precision, recall) of the
/// clipped matches; the best over the references. Words lose trailing dots;
/// identical word sequences score 1.
pub(crate) fn gleu(candidate: &str, references: &[String]) -> f64 {
    // promptfoo 0.121 throws on an empty candidate; later versions score it 0.
    if candidate.trim().is_empty() {
        return 0.0;
    }
    let words = |text: &str| -> Vec<String> {
        js_words(text)
            .into_iter()
            .map(|w| w.trim_end_matches('.').to_owned())
            .collect()
    };
    let cand = words(candidate);
    references
        .iter()
        .map(|reference| {
            let refw = words(reference);
            if cand == refw {
                return 1.0;
            }
            let (mut matches, mut cand_total, mut ref_total) = (0, 0, 0);
            for n in 1..=4 {
                let cg = ngrams(&cand, n);
                let rg = ngrams(&refw, n);
                matches += clipped_overlap(&cg, &rg);
                cand_total += cg.len();
                ref_total += rg.len();
            }
            if cand_total == 0 || ref_total == 0 {
                return 0.0;
            }
            let precision = matches as f64 / cand_total as f64;
            let recall = matches as f64 / ref_total as f64;
            precision.min(recall)
        })
        .fold(f64::NEG_INFINITY, f64::max)
        .max(0.0)
}

/// ROUGE-1 F1 over lowercased Treebank tokens with clipped counts, so an
/// identical text scores 1 even with repeated words.
pub(crate) fn rouge_n(candidate: &str, reference: &str) -> f64 {
    let cand = treebank_tokens(&candidate.to_lowercase());
    let refr = treebank_tokens(&reference.to_lowercase());
    if cand.is_empty() || refr.is_empty() {
        return 0.0;
    }
    let overlap = clipped_overlap(&cand, &refr);
    if overlap == 0 {
        return 0.0;
    }
    let precision = overlap as f64 / cand.len() as f64;
    let recall = overlap as f64 / refr.len() as f64;
    if precision == recall {
        return precision;
    }
    2.0 * precision * recall / (precision + recall)
}

/// The Penn Treebank word tokenizer as js-rouge writes it, for one sentence:
/// punctuation, brackets and quotes become tokens, and clitics (`'s`, `n't`,
/// `'ll`, `can|not`, `gon|na`…) are split off. Its finer quote heuristics are
/// reduced to "a quote after a space, punctuation or the start opens".
pub(crate) fn treebank_tokens(input: &str) -> Vec<String> {
    let text: String = input.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.is_empty() {
        return Vec::new();
    }
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len() * 2);
    let mut inside_quotes = false;
    // The last index that is not trailing closers, for the final period rule.
    let mut tail = chars.len();
    while tail > 0 && matches!(chars[tail - 1], ']' | ')' | '}' | '>' | '\'' | ' ') {
        tail -= 1;
    }
    let final_period = tail > 0
        && chars[tail - 1] == '.'
        && !(tail >= 2 && chars[tail - 2] == '.')
        && !acronym_before(&chars, tail - 1);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let pair = |a: char, b: char| c == a && next == Some(b);
        if pair('`', '`') || pair('\'', '\'') || c == '"' {
            let opens = pair('`', '`')
                || (c == '"'
                    && !inside_quotes
                    && (i == 0
                        || chars[i - 1].is_whitespace()
                        || chars[i - 1].is_ascii_punctuation()));
            inside_quotes = opens;
            out.push_str(if opens { " `` " } else { " '' " });
            i += if c == '"' { 1 } else { 2 };
            continue;
        }
        if c == '.' && next == Some('.') && chars.get(i + 2) == Some(&'.') {
            out.push_str(" ... ");
            i += 3;
            continue;
        }
        if pair('-', '-') {
            out.push_str(" -- ");
            i += 2;
            continue;
        }
        match c {
            ':' | ',' if !next.is_some_and(|n| n.is_numeric()) => {
                out.push(' ');
                out.push(c);
                out.push(' ');
            }
            ';' | '@' | '#' | '$' | '%' | '&' | '?' | '!' | '[' | ']' | '(' | ')' | '{' | '}'
            | '<' | '>' => {
                out.push(' ');
                out.push(c);
                out.push(' ');
            }
            '.' if final_period && i == tail - 1 => out.push_str(" . "),
            _ => out.push(c),
        }
        i += 1;
    }
    let mut words: Vec<String> = Vec::new();
    for word in out.split(' ').filter(|w| !w.is_empty()) {
        split_clitics(word, &mut words);
    }
    words
}

/// `e.g.`-style: a single letter, a dot and a letter right before `dot`.
fn acronym_before(chars: &[char], dot: usize) -> bool {
    dot >= 3
        && chars[dot - 1].is_ascii_alphabetic()
        && chars[dot - 2] == '.'
        && chars[dot - 3].is_ascii_alphabetic()
        && (dot < 4 || !chars[dot - 4].is_alphanumeric())
}

const CONTRACTIONS: [(&str, usize); 10] = [
    ("cannot", 3),
    ("d'ye", 1),
    ("gimme", 3),
    ("gonna", 3),
    ("gotta", 3),
    ("lemme", 3),
    ("more'n", 4),
    ("wanna", 3),
    ("'tis", 2),
    ("'twas", 2),
];

fn split_clitics(word: &str, out: &mut Vec<String>) {
    if word == "''" || word == "``" {
        out.push(word.to_owned());
        return;
    }
    let lower = word.to_lowercase();
    if let Some((_, at)) = CONTRACTIONS.iter().find(|(c, _)| *c == lower) {
        out.push(word[..*at].to_owned());
        out.push(word[*at..].to_owned());
        return;
    }
    for suffix in ["n't", "'ll", "'re", "'ve", "'s", "'m", "'d"] {
        if lower.len() > suffix.len() && lower.ends_with(suffix) {
            let at = word.len() - suffix.len();
            if word.is_char_boundary(at) {
                out.push(word[..at].to_owned());
                out.push(word[at..].to_owned());
                return;
            }
        }
    }
    if word.len() > 1 && word.ends_with('\'') {
        out.push(word[..word.len() - 1].to_owned());
        out.push("'".to_owned());
        return;
    }
    out.push(word.to_owned());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn identical_text_scores_one_on_every_metric() {
        let text = "The quick brown fox jumps over the lazy dog";
        assert!((bleu(text, &refs(&[text])) - 1.0).abs() < 1e-12);
        assert_eq!(gleu(text, &refs(&[text])), 1.0);
        assert_eq!(rouge_n(text, text), 1.0);
    }

    #[test]
    fn bleu_short_candidate_skips_missing_orders_and_pays_brevity() {
        // Two words: only 1- and 2-grams count; both match; BP = e^(1 - 4/2).
        let score = bleu("the cat", &refs(&["the cat sat down"]));
        assert!((score - (-1.0f64).exp()).abs() < 1e-12, "{score}");
    }

    #[test]
    fn bleu_takes_the_best_reference_per_order() {
        let score = bleu(
            "the cat sat on the mat",
            &refs(&["a cat sat on a mat", "the cat sat on the mat"]),
        );
        assert!((score - 1.0).abs() < 1e-12);
        assert_eq!(bleu("   ", &refs(&["x"])), 0.0);
    }

    #[test]
    fn gleu_is_min_of_precision_and_recall() {
        // candidate 3 words (6 grams), reference 4 words (10 grams);
        // matches: "the", "cat", "sat", "the cat", "cat sat", "the cat sat" = 6.
        let score = gleu("The cat sat.", &refs(&["the cat sat down"]));
        assert!((score - 0.6).abs() < 1e-12, "{score}");
        assert_eq!(gleu("", &refs(&["x"])), 0.0);
    }

    #[test]
    fn rouge_is_unigram_f1_on_treebank_tokens() {
        // Tokens: [the, cat, sat, .] vs [the, cat, sat, down, .]: overlap 4,
        // P = 1, R = 0.8, F1 = 8/9.
        let score = rouge_n("The cat sat.", "The cat sat down.");
        assert!((score - 8.0 / 9.0).abs() < 1e-12, "{score}");
        assert_eq!(rouge_n("", "x"), 0.0);
    }

    #[test]
    fn treebank_splits_punctuation_and_clitics() {
        assert_eq!(
            treebank_tokens("i can't go, (really) -- it's \"late\"!"),
            vec![
                "i", "ca", "n't", "go", ",", "(", "really", ")", "--", "it", "'s", "``", "late",
                "''", "!"
            ]
        );
        assert_eq!(
            treebank_tokens("costs $1,000."),
            vec!["costs", "$", "1,000", "."]
        );
        assert_eq!(treebank_tokens("i cannot"), vec!["i", "can", "not"]);
    }
}
