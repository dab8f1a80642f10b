//! A toy language whose truths are known, and its word tokenizer.
//!
//! Two kinds of documents, generated from a seed:
//!
//! * **Reviews** — `the film was great and fun .` / `the meal was awful and cold .`: every
//!   sentiment word of one review has the same polarity, the review's label.
//! * **Indirect objects** (IOI) — `alice and bob went to the shop . bob gave the book to alice`:
//!   two names, one repeated as the subject of the second clause; the answer, the indirect
//!   object, is the name that appeared once.
//!
//! Words are tokens: [`Vocab`] maps each word of the language (plus `<pad>`, `<bos>`, `<eos>`)
//! to an id, and saves as a JSON object `word → id`.
//!
//! ```
//! use tdhook_cli::toy::{Toy, Vocab};
//! let vocab = Vocab::toy();
//! let mut toy = Toy::new(7);
//! let r = toy.review();
//! let ids = vocab.encode(&r.text).unwrap();
//! assert_eq!(vocab.decode(&ids), r.text);
//! let ioi = toy.ioi();
//! assert!(ioi.prompt.ends_with(" to"));
//! assert_eq!(ioi.text(), format!("{} {}", ioi.prompt, ioi.answer));
//! ```

use anyhow::{Context, Result, bail};
use std::collections::HashMap;

/// Positive sentiment words.
pub const POSITIVE: &[&str] = &[
    "great",
    "fun",
    "good",
    "lovely",
    "superb",
    "tasty",
    "warm",
    "fresh",
    "brilliant",
    "charming",
    "wonderful",
    "excellent",
    "pleasant",
    "friendly",
    "clean",
    "perfect",
];
/// Negative sentiment words.
pub const NEGATIVE: &[&str] = &[
    "awful", "cold", "bad", "boring", "dull", "terrible", "bland", "stale", "rude", "dirty",
    "noisy", "poor", "horrible", "nasty", "slow", "weak",
];
/// What reviews are about.
pub const SUBJECTS: &[&str] = &[
    "film", "meal", "show", "hotel", "room", "service", "music", "food", "staff", "play", "game",
    "album", "view", "trip", "cafe", "story",
];
/// Intensifiers (neutral).
pub const INTENSIFIERS: &[&str] = &["very", "really", "quite", "so"];
/// People.
pub const NAMES: &[&str] = &[
    "alice", "bob", "carol", "dave", "emma", "frank", "grace", "henry", "iris", "jack", "kate",
    "liam", "mary", "nick", "olga", "paul", "rosa", "sam", "tina", "victor",
];
/// Where they went.
pub const PLACES: &[&str] = &[
    "shop", "park", "school", "market", "beach", "library", "station", "museum", "garden",
    "office", "zoo", "bakery",
];
/// What was given.
pub const OBJECTS: &[&str] = &[
    "book", "ball", "key", "letter", "cake", "ring", "pen", "bag", "gift", "map", "apple", "cup",
];
/// How it was given.
pub const VERBS: &[&str] = &["gave", "handed", "passed", "sent", "showed", "threw"];
/// Glue.
pub const FUNCTION_WORDS: &[&str] = &[
    "the", "a", "was", "and", "i", "thought", "what", "but", "went", "to", "were", "at", "when",
    "then", "later", ".", ",",
];

/// Padding id (0).
pub const PAD: &str = "<pad>";
/// Start of a document.
pub const BOS: &str = "<bos>";
/// End of a document.
pub const EOS: &str = "<eos>";
/// Unknown word (never generated; what a `tokenizers` WordLevel tokenizer maps strangers to).
pub const UNK: &str = "<unk>";

/// The polarity of a word: `Some(true)` positive, `Some(false)` negative, `None` neutral.
pub fn polarity(word: &str) -> Option<bool> {
    if POSITIVE.contains(&word) {
        Some(true)
    } else if NEGATIVE.contains(&word) {
        Some(false)
    } else {
        None
    }
}

/// Whether `word` is a name.
pub fn is_name(word: &str) -> bool {
    NAMES.contains(&word)
}

/// A word-level tokenizer: one id per word, words split on spaces.
#[derive(Clone, Debug, PartialEq)]
pub struct Vocab {
    words: Vec<String>,
    index: HashMap<String, u32>,
}

impl Vocab {
    /// The toy language's vocabulary: `<pad>` = 0, `<bos>` = 1, `<eos>` = 2, `<unk>` = 3, then
    /// the words.
    pub fn toy() -> Self {
        let mut words: Vec<&str> = vec![PAD, BOS, EOS, UNK];
        for list in [
            FUNCTION_WORDS,
            INTENSIFIERS,
            POSITIVE,
            NEGATIVE,
            SUBJECTS,
            NAMES,
            PLACES,
            OBJECTS,
            VERBS,
        ] {
            for w in list {
                if !words.contains(w) {
                    words.push(w);
                }
            }
        }
        Self::from_words(words.into_iter().map(String::from).collect()).expect("distinct words")
    }

    /// From words in id order.
    pub fn from_words(words: Vec<String>) -> Result<Self> {
        let mut index = HashMap::new();
        for (i, w) in words.iter().enumerate() {
            if index.insert(w.clone(), i as u32).is_some() {
                bail!("the word `{w}` appears twice in the vocabulary");
            }
        }
        Ok(Self { words, index })
    }

    /// Parse a JSON object `word → id` (ids must be 0..n without gaps).
    pub fn from_json(text: &str) -> Result<Self> {
        let map: HashMap<String, u32> =
            serde_json::from_str(text).context("vocab.json: expected an object word → id")?;
        let mut words = vec![String::new(); map.len()];
        for (w, &i) in &map {
            let slot = words.get_mut(i as usize).with_context(|| {
                format!(
                    "vocab.json: id {i} of `{w}` is out of range 0..{}",
                    map.len()
                )
            })?;
            *slot = w.clone();
        }
        if let Some(i) = words.iter().position(String::is_empty) {
            bail!("vocab.json: no word has id {i}");
        }
        Self::from_words(words)
    }

    /// The JSON object `word → id`, in id order.
    pub fn to_json(&self) -> String {
        let body: Vec<String> = self
            .words
            .iter()
            .enumerate()
            .map(|(i, w)| format!("  {}: {i}", serde_json::to_string(w).expect("string")))
            .collect();
        format!("{{\n{}\n}}\n", body.join(",\n"))
    }

    /// Number of words.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// Whether it has no words.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// The words, in id order.
    pub fn words(&self) -> &[String] {
        &self.words
    }

    /// The id of `word`.
    pub fn id(&self, word: &str) -> Option<u32> {
        self.index.get(word).copied()
    }

    /// The word of `id`.
    pub fn word(&self, id: u32) -> &str {
        self.words.get(id as usize).map_or(UNK, String::as_str)
    }

    /// `<pad>`'s id.
    pub fn pad(&self) -> u32 {
        self.id(PAD).unwrap_or(0)
    }

    /// `<bos>`'s id.
    pub fn bos(&self) -> u32 {
        self.id(BOS).unwrap_or(1)
    }

    /// `<eos>`'s id.
    pub fn eos(&self) -> u32 {
        self.id(EOS).unwrap_or(2)
    }

    /// Ids of the space-separated words of `text`; an unknown word is an error naming it.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        text.split_whitespace()
            .map(|w| {
                self.id(w).with_context(|| {
                    format!(
                        "`{w}` is not a word of the toy language (try e.g. `the film was great .`)"
                    )
                })
            })
            .collect()
    }

    /// `<bos>` followed by the ids of `text`.
    pub fn encode_doc(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = vec![self.bos()];
        ids.extend(self.encode(text)?);
        Ok(ids)
    }

    /// The words of `ids`, joined by spaces.
    pub fn decode(&self, ids: &[u32]) -> String {
        ids.iter()
            .map(|&i| self.word(i))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A deterministic generator (splitmix64).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// Seeded.
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A standard normal sample (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.unit().max(1e-12);
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// A fair coin.
    pub fn coin(&mut self) -> bool {
        self.next_u64() & 1 == 1
    }

    /// One element of `items`.
    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    /// Two distinct elements of `items`.
    pub fn pick2<'a>(&mut self, items: &[&'a str]) -> (&'a str, &'a str) {
        let i = self.below(items.len());
        let j = (i + 1 + self.below(items.len() - 1)) % items.len();
        (items[i], items[j])
    }
}

/// A review and its label.
#[derive(Clone, Debug, PartialEq)]
pub struct Review {
    /// Space-separated words, no `<bos>`.
    pub text: String,
    /// `true`: positive.
    pub positive: bool,
}

/// An indirect-object sentence.
#[derive(Clone, Debug, PartialEq)]
pub struct Ioi {
    /// Everything up to the answer (ends with `to`).
    pub prompt: String,
    /// The indirect object: the name that appeared once.
    pub answer: String,
    /// The repeated name (the subject of the second clause).
    pub subject: String,
}

impl Ioi {
    /// Prompt and answer.
    pub fn text(&self) -> String {
        format!("{} {}", self.prompt, self.answer)
    }

    /// The same prompt with the repeated name (second mention) swapped for the answer, so the
    /// answer becomes the other name: the corrupted input of activation patching.
    pub fn corrupted_prompt(&self) -> String {
        let words: Vec<&str> = self.prompt.split(' ').collect();
        let last = words
            .iter()
            .rposition(|w| *w == self.subject)
            .expect("the subject appears in the prompt");
        let mut out: Vec<&str> = words.clone();
        out[last] = &self.answer;
        out.join(" ")
    }
}

/// A document: a review or an IOI sentence.
#[derive(Clone, Debug, PartialEq)]
pub enum Doc {
    /// Sentiment.
    Review(Review),
    /// Indirect object.
    Ioi(Ioi),
}

impl Doc {
    /// The document's words.
    pub fn text(&self) -> String {
        match self {
            Doc::Review(r) => r.text.clone(),
            Doc::Ioi(i) => i.text(),
        }
    }
}

/// The toy language generator.
#[derive(Clone, Debug)]
pub struct Toy {
    rng: Rng,
}

impl Toy {
    /// Seeded: the same seed gives the same documents.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: Rng::new(seed),
        }
    }

    /// The generator's random numbers (to draw more from the same stream).
    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    /// A review of random polarity.
    pub fn review(&mut self) -> Review {
        let positive = self.rng.coin();
        self.review_with(positive)
    }

    /// A review of the given polarity.
    pub fn review_with(&mut self, positive: bool) -> Review {
        let words = if positive { POSITIVE } else { NEGATIVE };
        let r = &mut self.rng;
        let (n1, n2) = r.pick2(SUBJECTS);
        let (a1, a2) = r.pick2(words);
        let a3 = r.pick(words);
        let i = r.pick(INTENSIFIERS);
        let text = match r.below(8) {
            0 => format!("the {n1} was {a1} ."),
            1 | 2 => format!("the {n1} was {a1} and {a2} ."),
            3 => format!("the {n1} was {i} {a1} ."),
            4 => format!("the {n1} was {a1} . the {n2} was {a2} ."),
            5 => format!("i thought the {n1} was {a1} and the {n2} was {i} {a2} ."),
            6 => format!("what a {a1} {n1} . the {n2} was {a2} and {a3} ."),
            _ => format!("the {n1} was {i} {a1} , the {n2} was {a2} ."),
        };
        Review { text, positive }
    }

    /// An indirect-object sentence.
    pub fn ioi(&mut self) -> Ioi {
        let r = &mut self.rng;
        let (a, b) = r.pick2(NAMES);
        let place = r.pick(PLACES);
        let obj = r.pick(OBJECTS);
        let verb = r.pick(VERBS);
        let (subject, answer) = if r.coin() { (a, b) } else { (b, a) };
        let prompt = match r.below(4) {
            0 | 1 => format!("{a} and {b} went to the {place} . {subject} {verb} the {obj} to"),
            2 => format!("when {a} and {b} went to the {place} , {subject} {verb} a {obj} to"),
            _ => format!("{a} and {b} were at the {place} . later {subject} {verb} the {obj} to"),
        };
        Ioi {
            prompt,
            answer: answer.into(),
            subject: subject.into(),
        }
    }

    /// An IOI sentence of the tour's fixed template (`A and B went to the PLACE . S gave the OBJ
    /// to`), so that the positions of a batch of them line up.
    pub fn ioi_fixed(&mut self) -> Ioi {
        let r = &mut self.rng;
        let (a, b) = r.pick2(NAMES);
        let place = r.pick(PLACES);
        let obj = r.pick(OBJECTS);
        let (subject, answer) = if r.coin() { (a, b) } else { (b, a) };
        Ioi {
            prompt: format!("{a} and {b} went to the {place} . {subject} gave the {obj} to"),
            answer: answer.into(),
            subject: subject.into(),
        }
    }

    /// A document: a review or an IOI sentence, even odds.
    pub fn doc(&mut self) -> Doc {
        if self.rng.coin() {
            Doc::Review(self.review())
        } else {
            Doc::Ioi(self.ioi())
        }
    }

    /// `n` reviews of `len` words each (for batches whose positions line up), labels balanced
    /// (alternating positive, negative).
    pub fn reviews_of_len(&mut self, n: usize, len: usize) -> Vec<Review> {
        let mut out = Vec::with_capacity(n);
        let mut tries = 0;
        while out.len() < n {
            tries += 1;
            assert!(tries < 1000 * (n + 1), "no review template has {len} words");
            let r = self.review_with(out.len() % 2 == 0);
            if r.text.split(' ').count() == len {
                out.push(r);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocab_round_trips_through_json() {
        let v = Vocab::toy();
        assert!((100..=300).contains(&v.len()), "{} words", v.len());
        assert_eq!(v.pad(), 0);
        assert_eq!(Vocab::from_json(&v.to_json()).unwrap(), v);
    }

    #[test]
    fn every_generated_word_is_in_the_vocab_and_truths_hold() {
        let v = Vocab::toy();
        let mut toy = Toy::new(1);
        for _ in 0..500 {
            let r = toy.review();
            v.encode(&r.text).unwrap();
            let pols: Vec<bool> = r.text.split(' ').filter_map(polarity).collect();
            assert!(
                !pols.is_empty() && pols.iter().all(|&p| p == r.positive),
                "{}",
                r.text
            );
            let i = toy.ioi();
            let words: Vec<&str> = i.prompt.split(' ').collect();
            assert!(v.encode(&i.text()).unwrap().len() + 2 <= 32);
            assert_eq!(words.iter().filter(|w| **w == i.answer).count(), 1);
            assert_eq!(words.iter().filter(|w| **w == i.subject).count(), 2);
            let c = i.corrupted_prompt();
            let cw: Vec<&str> = c.split(' ').collect();
            assert_eq!(cw.len(), words.len());
            assert_eq!(cw.iter().filter(|w| **w == i.answer).count(), 2);
        }
    }

    #[test]
    fn seeds_reproduce() {
        let a: Vec<Doc> = (0..20).scan(Toy::new(5), |t, _| Some(t.doc())).collect();
        let b: Vec<Doc> = (0..20).scan(Toy::new(5), |t, _| Some(t.doc())).collect();
        assert_eq!(a, b);
    }
}
