//! Deterministic embeddings: each lowercased word hashes to a fixed random
//! direction and a text is the normalised sum of its words, so equal texts
//! embed equally and texts sharing words land closer than unrelated ones.

use crate::{faults::SplitMix64, stats::fnv1a};

pub(crate) const DEFAULT_DIMENSIONS: usize = 64;
pub(crate) const MAX_DIMENSIONS: usize = 4096;

/// A unit vector of `dimensions` components for `text`.
pub(crate) fn embed(text: &str, dimensions: usize) -> Vec<f32> {
    let mut acc = vec![0f64; dimensions];
    let mut words = 0usize;
    let mut hash = FNV_OFFSET;
    let mut in_word = false;
    for ch in text.chars() {
        if ch.is_alphanumeric() {
            for lower in ch.to_lowercase() {
                let mut buf = [0u8; 4];
                for b in lower.encode_utf8(&mut buf).as_bytes() {
                    hash = fnv_step(hash, *b);
                }
            }
            in_word = true;
        } else if in_word {
            add_direction(&mut acc, hash);
            words += 1;
            hash = FNV_OFFSET;
            in_word = false;
        }
    }
    if in_word {
        add_direction(&mut acc, hash);
        words += 1;
    }
    if words == 0 {
        // Punctuation-only or empty text still gets its own stable direction.
        add_direction(&mut acc, fnv1a(text.as_bytes()));
    }
    let norm = acc.iter().map(|x| x * x).sum::<f64>().sqrt();
    acc.iter().map(|x| (x / norm) as f32).collect()
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn fnv_step(h: u64, b: u8) -> u64 {
    (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
}

fn add_direction(acc: &mut [f64], seed: u64) {
    let mut rng = SplitMix64(seed);
    for x in acc.iter_mut() {
        *x += rng.next_f64() * 2.0 - 1.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn embeddings_are_unit_length_and_deterministic() {
        for text in ["hello world", "", "!!!", "Ünïcode wörds 42"] {
            let v = embed(text, DEFAULT_DIMENSIONS);
            assert_eq!(v.len(), DEFAULT_DIMENSIONS);
            let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-4, "{text}: {norm}");
            assert_eq!(v, embed(text, DEFAULT_DIMENSIONS));
        }
    }

    #[test]
    fn case_and_punctuation_do_not_change_the_vector() {
        let a = embed("Hello, World!", 64);
        let b = embed("hello world", 64);
        assert!((cosine(&a, &b) - 1.0).abs() < 1e-5);
    }

    #[test]
    fn shared_words_are_closer_than_unrelated_text() {
        let base = embed("the quick brown fox jumps", 256);
        let near = embed("the quick brown fox sleeps", 256);
        let far = embed("quantum chromodynamics lattice gauge", 256);
        assert!(cosine(&base, &near) > cosine(&base, &far) + 0.3);
    }
}
