//! Request counters: plain atomics on the hot path, snapshotted into
//! [`MockStats`] for `GET /stats` and [`crate::MockServer::stats`].

use std::{
    collections::BTreeMap,
    sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering},
    },
};

use serde::{Deserialize, Serialize};

/// A snapshot of the mock's counters since start or the last reset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MockStats {
    /// Every request to an API endpoint (chat, completions, embeddings,
    /// Anthropic messages, Ollama chat).
    pub requests: u64,
    pub chat: u64,
    pub completions: u64,
    pub embeddings: u64,
    /// Anthropic-style `POST /v1/messages` requests.
    #[serde(default)]
    pub messages: u64,
    /// Ollama-style `POST /api/chat` requests.
    #[serde(default)]
    pub ollama_chat: u64,
    /// Requests answered 200.
    pub ok: u64,
    /// Requests rejected 400 because the body was not a valid request.
    pub bad_requests: u64,
    pub faults_429: u64,
    pub faults_500: u64,
    pub faults_timeout: u64,
    /// API requests being handled right now.
    pub in_flight: u64,
    /// The most API requests handled at once.
    pub in_flight_peak: u64,
    /// Requests per `model` field, for models seen since the last reset.
    pub models: BTreeMap<String, u64>,
    /// Requests that carried a W3C `traceparent`,
    #[serde(default)]
    pub traced: u64,
    /// and how many per trace id (the first 256 ids seen; the rest under
    /// `(other)`).
    #[serde(default)]
    pub traces: BTreeMap<String, u64>,
}

/// Which endpoint a request hit.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Endpoint {
    Chat,
    Completions,
    Embeddings,
    Messages,
    OllamaChat,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    requests: AtomicU64,
    chat: AtomicU64,
    completions: AtomicU64,
    embeddings: AtomicU64,
    messages: AtomicU64,
    ollama_chat: AtomicU64,
    pub(crate) ok: AtomicU64,
    pub(crate) bad_requests: AtomicU64,
    pub(crate) faults_429: AtomicU64,
    pub(crate) faults_500: AtomicU64,
    pub(crate) faults_timeout: AtomicU64,
    in_flight: AtomicU64,
    in_flight_peak: AtomicU64,
    models: ModelCounts,
    traced: AtomicU64,
    traces: ModelCounts,
}

impl Counters {
    /// Counts a new API request; the returned guard keeps it in flight until dropped,
    /// which also covers a client that disconnects mid-request.
    pub(crate) fn begin(&self, endpoint: Endpoint) -> InFlight<'_> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        match endpoint {
            Endpoint::Chat => &self.chat,
            Endpoint::Completions => &self.completions,
            Endpoint::Embeddings => &self.embeddings,
            Endpoint::Messages => &self.messages,
            Endpoint::OllamaChat => &self.ollama_chat,
        }
        .fetch_add(1, Ordering::Relaxed);
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.in_flight_peak.fetch_max(now, Ordering::Relaxed);
        InFlight(&self.in_flight)
    }

    pub(crate) fn model(&self, model: &str) {
        self.models.bump(model);
    }

    /// Counts a request's `traceparent` (`00-<trace id>-<span id>-<flags>`).
    pub(crate) fn traceparent(&self, value: &str) {
        if let Some(trace_id) = value.split('-').nth(1) {
            self.traced.fetch_add(1, Ordering::Relaxed);
            self.traces.bump(trace_id);
        }
    }

    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn reset(&self) {
        for c in [
            &self.requests,
            &self.chat,
            &self.completions,
            &self.embeddings,
            &self.messages,
            &self.ollama_chat,
            &self.ok,
            &self.bad_requests,
            &self.faults_429,
            &self.faults_500,
            &self.faults_timeout,
            &self.traced,
        ] {
            c.store(0, Ordering::Relaxed);
        }
        // In-flight requests are still running; the peak restarts from them.
        self.in_flight_peak
            .store(self.in_flight.load(Ordering::Relaxed), Ordering::Relaxed);
        self.models.reset();
        self.traces.reset();
    }

    pub(crate) fn snapshot(&self) -> MockStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MockStats {
            requests: get(&self.requests),
            chat: get(&self.chat),
            completions: get(&self.completions),
            embeddings: get(&self.embeddings),
            messages: get(&self.messages),
            ollama_chat: get(&self.ollama_chat),
            ok: get(&self.ok),
            bad_requests: get(&self.bad_requests),
            faults_429: get(&self.faults_429),
            faults_500: get(&self.faults_500),
            faults_timeout: get(&self.faults_timeout),
            in_flight: get(&self.in_flight),
            in_flight_peak: get(&self.in_flight_peak),
            models: self.models.snapshot(),
            traced: get(&self.traced),
            traces: self.traces.snapshot(),
        }
    }
}

pub(crate) struct InFlight<'a>(&'a AtomicU64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

const MODEL_SLOTS: usize = 256;
/// Where requests for models beyond the table's capacity are counted.
const OVERFLOW_MODEL: &str = "(other)";

/// A fixed open-addressing table of model names, so counting a model is a hash,
/// a compare and an atomic add: no lock, and an allocation only the first time
/// a name is seen. Names stay claimed across resets; only counts are zeroed.
#[derive(Debug)]
struct ModelCounts {
    slots: Box<[ModelSlot]>,
    overflow: AtomicU64,
}

#[derive(Debug, Default)]
struct ModelSlot {
    name: OnceLock<Box<str>>,
    count: AtomicU64,
}

impl Default for ModelCounts {
    fn default() -> Self {
        Self {
            slots: (0..MODEL_SLOTS).map(|_| ModelSlot::default()).collect(),
            overflow: AtomicU64::new(0),
        }
    }
}

impl ModelCounts {
    fn bump(&self, model: &str) {
        let start = fnv1a(model.as_bytes()) as usize;
        for i in 0..MODEL_SLOTS {
            let slot = &self.slots[(start + i) % MODEL_SLOTS];
            let name = match slot.name.get() {
                Some(name) => name,
                // Racing claimers of an empty slot: one wins, the others compare with its name.
                None => slot.name.get_or_init(|| model.into()),
            };
            if &**name == model {
                slot.count.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        self.overflow.fetch_add(1, Ordering::Relaxed);
    }

    fn reset(&self) {
        for slot in self.slots.iter() {
            slot.count.store(0, Ordering::Relaxed);
        }
        self.overflow.store(0, Ordering::Relaxed);
    }

    fn snapshot(&self) -> BTreeMap<String, u64> {
        let mut out: BTreeMap<String, u64> = self
            .slots
            .iter()
            .filter_map(|s| {
                let count = s.count.load(Ordering::Relaxed);
                let name = s.name.get()?;
                (count > 0).then(|| (name.to_string(), count))
            })
            .collect();
        let overflow = self.overflow.load(Ordering::Relaxed);
        if overflow > 0 {
            out.insert(OVERFLOW_MODEL.to_owned(), overflow);
        }
        out
    }
}

pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_are_counted_separately_and_reset_to_absent() {
        let c = Counters::default();
        for m in ["gpt-4.1", "o4-mini", "gpt-4.1", ""] {
            c.model(m);
        }
        let s = c.snapshot();
        assert_eq!(s.models.get("gpt-4.1"), Some(&2));
        assert_eq!(s.models.get("o4-mini"), Some(&1));
        assert_eq!(s.models.get(""), Some(&1));
        c.reset();
        assert!(c.snapshot().models.is_empty());
        c.model("o4-mini");
        assert_eq!(c.snapshot().models.get("o4-mini"), Some(&1));
    }

    #[test]
    fn models_beyond_capacity_land_in_overflow() {
        let c = Counters::default();
        for i in 0..MODEL_SLOTS + 10 {
            c.model(&format!("m{i}"));
        }
        let s = c.snapshot();
        assert_eq!(s.models.len(), MODEL_SLOTS + 1);
        assert_eq!(s.models.get(OVERFLOW_MODEL), Some(&10));
    }

    #[test]
    fn in_flight_peak_tracks_concurrent_guards() {
        let c = Counters::default();
        let a = c.begin(Endpoint::Chat);
        let b = c.begin(Endpoint::Embeddings);
        assert_eq!(c.snapshot().in_flight, 2);
        drop(a);
        drop(b);
        let s = c.snapshot();
        assert_eq!((s.in_flight, s.in_flight_peak), (0, 2));
        assert_eq!((s.requests, s.chat, s.embeddings), (2, 1, 1));
    }
}
