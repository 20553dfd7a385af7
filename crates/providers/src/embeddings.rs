//! Embeddings over an OpenAI-compatible `POST {base}/embeddings`, for the
//! `similar` and `answer-relevance` graders. A provider built from
//! `openai:embedding:<model>` or `openai:embeddings:<model>` embeds; the
//! chat and completion providers do not (as in promptfoo, a grader must be
//! an embedding provider to embed).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{ProviderError, estimate_tokens, openai::OpenAiApi, openai::OpenAiProvider};

/// One vector per input text, in input order, and what the call cost.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Embeddings {
    pub vectors: Vec<Vec<f32>>,
    pub tokens_in: u32,
    /// Time of the successful attempt, request sent to body read.
    pub latency_ms: u32,
    pub cost_usd: f64,
    /// The answer's rate-limit headers; see [`Completion::rate_limit`](crate::Completion::rate_limit).
    #[serde(skip)]
    pub rate_limit: Option<crate::RateLimitInfo>,
}

#[derive(Serialize)]
struct Body<'a> {
    model: &'a str,
    input: &'a [String],
    #[serde(flatten)]
    params: &'a Map<String, Value>,
}

#[derive(Deserialize)]
struct Answer {
    data: Vec<Item>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Item {
    #[serde(default)]
    index: Option<usize>,
    embedding: Vec<f32>,
}

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
}

pub(crate) async fn embed(
    provider: &OpenAiProvider,
    texts: &[String],
) -> Result<Embeddings, ProviderError> {
    if provider.api != OpenAiApi::Embeddings {
        return Err(ProviderError::Unsupported(format!(
            "{} cannot embed texts; use an embedding model such as openai:embeddings:text-embedding-3-small",
            provider.id
        )));
    }
    if texts.is_empty() {
        return Ok(Embeddings::default());
    }
    let (answer, sent): (Answer, _) = provider
        .post_json(&Body {
            model: &provider.model,
            input: texts,
            params: &provider.params,
        })
        .await?;
    let latency_ms = sent.latency_ms;
    let vectors = in_order(answer.data, texts.len())
        .map_err(|problem| ProviderError::Decode(format!("{}: {problem}", provider.id)))?;
    let tokens_in = answer.usage.and_then(|u| u.prompt_tokens).map_or_else(
        || texts.iter().map(|t| estimate_tokens(t)).sum(),
        |n| u32::try_from(n).unwrap_or(u32::MAX),
    );
    tracing::debug!(provider = %provider.id, latency_ms, tokens_in, texts = texts.len(), "embeddings call completed");
    Ok(Embeddings {
        vectors,
        tokens_in,
        latency_ms,
        cost_usd: provider.price.map_or(0.0, |p| p.cost_usd(tokens_in, 0)),
        rate_limit: sent.rate_limit,
    })
}

/// The vectors ordered by their `index` (the API may answer out of order),
/// exactly one per input.
fn in_order(items: Vec<Item>, expected: usize) -> Result<Vec<Vec<f32>>, String> {
    if items.len() != expected {
        return Err(format!(
            "asked for {expected} embeddings, got {}",
            items.len()
        ));
    }
    let mut slots: Vec<Option<Vec<f32>>> = vec![None; expected];
    for (position, item) in items.into_iter().enumerate() {
        let index = item.index.unwrap_or(position);
        match slots.get_mut(index) {
            Some(slot @ None) => *slot = Some(item.embedding),
            _ => {
                return Err(format!(
                    "embedding index {index} is out of range or repeated"
                ));
            }
        }
    }
    Ok(slots.into_iter().flatten().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(index: Option<usize>, x: f32) -> Item {
        Item {
            index,
            embedding: vec![x],
        }
    }

    #[test]
    fn vectors_follow_their_index_not_the_answer_order() {
        let got = in_order(vec![item(Some(1), 1.0), item(Some(0), 0.0)], 2).unwrap();
        assert_eq!(got, vec![vec![0.0], vec![1.0]]);
        let got = in_order(vec![item(None, 5.0), item(None, 6.0)], 2).unwrap();
        assert_eq!(got, vec![vec![5.0], vec![6.0]]);
    }

    #[test]
    fn missing_repeated_or_stray_vectors_are_decode_errors() {
        assert!(in_order(vec![item(Some(0), 0.0)], 2).is_err());
        assert!(in_order(vec![item(Some(0), 0.0), item(Some(0), 1.0)], 2).is_err());
        assert!(in_order(vec![item(Some(0), 0.0), item(Some(7), 1.0)], 2).is_err());
    }
}
