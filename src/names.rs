//! Human-readable container names: `adjective_surname`, from wharf's own word lists.
//!
//! 123 adjectives × 238 surnames of scientists and engineers give 29274 names.
//! The caller checks uniqueness against the store: [`generate`] takes a predicate saying
//! whether a name is taken, retries a few random picks, then appends a digit, as docker does.

use rand::Rng;

const ADJECTIVES: &[&str] = &[
    "admiring",
    "adoring",
    "affectionate",
    "agitated",
    "amazing",
    "angry",
    "awesome",
    "beautiful",
    "blissful",
    "bold",
    "boring",
    "brave",
    "busy",
    "charming",
    "clever",
    "compassionate",
    "competent",
    "condescending",
    "confident",
    "cool",
    "cranky",
    "crazy",
    "dazzling",
    "determined",
    "distracted",
    "dreamy",
    "eager",
    "ecstatic",
    "elastic",
    "elated",
    "elegant",
    "eloquent",
    "epic",
    "exciting",
    "fervent",
    "festive",
    "flamboyant",
    "focused",
    "friendly",
    "frosty",
    "funny",
    "gallant",
    "gifted",
    "goofy",
    "gracious",
    "great",
    "happy",
    "hardcore",
    "heuristic",
    "hopeful",
    "hungry",
    "infallible",
    "inspiring",
    "intelligent",
    "interesting",
    "jolly",
    "jovial",
    "keen",
    "kind",
    "laughing",
    "loving",
    "lucid",
    "magical",
    "modest",
    "musing",
    "mystifying",
    "naughty",
    "nervous",
    "nice",
    "nifty",
    "nostalgic",
    "objective",
    "optimistic",
    "peaceful",
    "pedantic",
    "pensive",
    "practical",
    "priceless",
    "quirky",
    "quizzical",
    "recursing",
    "relaxed",
    "reverent",
    "romantic",
    "sad",
    "serene",
    "sharp",
    "silly",
    "sleepy",
    "stoic",
    "strange",
    "stupefied",
    "suspicious",
    "sweet",
    "tender",
    "thirsty",
    "trusting",
    "unruffled",
    "upbeat",
    "vibrant",
    "vigilant",
    "vigorous",
    "wizardly",
    "wonderful",
    "xenodochial",
    "youthful",
    "zealous",
    "zen",
    "amiable",
    "brisk",
    "candid",
    "daring",
    "earnest",
    "fearless",
    "gentle",
    "humble",
    "lively",
    "mellow",
    "nimble",
    "plucky",
    "radiant",
    "steady",
    "witty",
];

const SURNAMES: &[&str] = &[
    "agnesi",
    "albattani",
    "allen",
    "almeida",
    "antonelli",
    "archimedes",
    "ardinghelli",
    "aryabhata",
    "austin",
    "babbage",
    "banach",
    "banzai",
    "bardeen",
    "bartik",
    "bassi",
    "beaver",
    "bell",
    "benz",
    "bhabha",
    "bhaskara",
    "black",
    "blackburn",
    "blackwell",
    "bohr",
    "booth",
    "borg",
    "bose",
    "bouman",
    "boyd",
    "brahmagupta",
    "brattain",
    "brown",
    "buck",
    "burnell",
    "cannon",
    "carson",
    "cartwright",
    "carver",
    "cerf",
    "chandrasekhar",
    "chaplygin",
    "chatelet",
    "chatterjee",
    "chaum",
    "chebyshev",
    "clarke",
    "cohen",
    "colden",
    "cori",
    "cray",
    "curie",
    "curran",
    "darwin",
    "davinci",
    "dewdney",
    "dhawan",
    "diffie",
    "dijkstra",
    "dirac",
    "driscoll",
    "dubinsky",
    "easley",
    "edison",
    "einstein",
    "elbakyan",
    "elgamal",
    "elion",
    "ellis",
    "engelbart",
    "euclid",
    "euler",
    "faraday",
    "feistel",
    "fermat",
    "fermi",
    "feynman",
    "franklin",
    "gagarin",
    "galileo",
    "galois",
    "ganguly",
    "gates",
    "gauss",
    "germain",
    "goldberg",
    "goldstine",
    "goldwasser",
    "golick",
    "goodall",
    "gould",
    "greider",
    "grothendieck",
    "haibt",
    "hamilton",
    "haslett",
    "hawking",
    "heisenberg",
    "hellman",
    "hermann",
    "herschel",
    "hertz",
    "heyrovsky",
    "hodgkin",
    "hofstadter",
    "hoover",
    "hopper",
    "hugle",
    "hypatia",
    "ishizaka",
    "jackson",
    "jang",
    "jemison",
    "jennings",
    "jepsen",
    "johnson",
    "joliot",
    "jones",
    "kalam",
    "kapitsa",
    "kare",
    "keldysh",
    "keller",
    "kepler",
    "khayyam",
    "khorana",
    "kilby",
    "kirch",
    "knuth",
    "kowalevski",
    "lalande",
    "lamarr",
    "lamport",
    "leakey",
    "leavitt",
    "lederberg",
    "lehmann",
    "lewin",
    "lichterman",
    "liskov",
    "lovelace",
    "lumiere",
    "mahavira",
    "margulis",
    "matsumoto",
    "maxwell",
    "mayer",
    "mccarthy",
    "mcclintock",
    "mclaren",
    "mclean",
    "mcnulty",
    "meitner",
    "mendel",
    "mendeleev",
    "meninsky",
    "merkle",
    "mestorf",
    "mirzakhani",
    "montalcini",
    "moore",
    "morse",
    "moser",
    "murdock",
    "napier",
    "nash",
    "neumann",
    "newton",
    "nightingale",
    "nobel",
    "noether",
    "northcutt",
    "noyce",
    "panini",
    "pare",
    "pascal",
    "pasteur",
    "payne",
    "perlman",
    "pike",
    "poincare",
    "poitras",
    "proskuriakova",
    "ptolemy",
    "raman",
    "ramanujan",
    "rhodes",
    "ride",
    "riemann",
    "ritchie",
    "robinson",
    "roentgen",
    "rosalind",
    "rubin",
    "saha",
    "sammet",
    "sanderson",
    "satoshi",
    "shamir",
    "shannon",
    "shaw",
    "shirley",
    "shockley",
    "shtern",
    "sinoussi",
    "snyder",
    "solomon",
    "spence",
    "stonebraker",
    "sutherland",
    "swanson",
    "swartz",
    "swirles",
    "taussig",
    "tesla",
    "tharp",
    "thompson",
    "torvalds",
    "tu",
    "turing",
    "varahamihira",
    "vaughan",
    "villani",
    "visvesvaraya",
    "volhard",
    "wescoff",
    "wilbur",
    "wiles",
    "williams",
    "williamson",
    "wilson",
    "wing",
    "wozniak",
    "wright",
    "wu",
    "yalow",
    "yonath",
    "zhukovsky",
    "zuse",
];

/// A random `adjective_surname`.
pub fn random() -> String {
    let mut rng = rand::thread_rng();
    let a = ADJECTIVES[rng.gen_range(0..ADJECTIVES.len())];
    let s = SURNAMES[rng.gen_range(0..SURNAMES.len())];
    format!("{a}_{s}")
}

/// A name for which `taken` is false: random picks first, then a digit suffix.
pub fn generate(mut taken: impl FnMut(&str) -> bool) -> String {
    for _ in 0..8 {
        let name = random();
        if !taken(&name) {
            return name;
        }
    }
    let base = random();
    (2..)
        .map(|n| format!("{base}{n}"))
        .find(|n| !taken(n))
        .unwrap_or(base)
}

/// docker's name rule, `[a-zA-Z0-9][a-zA-Z0-9_.-]+`, with at most `max` bytes (containers and
/// volumes differ only in the length).
pub fn docker_name_ok(name: &str, max: usize) -> bool {
    let b = name.as_bytes();
    b.len() >= 2
        && b.len() <= max
        && b[0].is_ascii_alphanumeric()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// What a name names: the rule is docker's for both, the length differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    /// At most 128 bytes (docker's limit).
    Container,
    /// At most 255 bytes: a volume's name is a directory name.
    Volume,
    /// At most 64 bytes: a network's name names aardvark-dns's file of it.
    Network,
}

impl NameKind {
    pub const fn max_len(self) -> usize {
        match self {
            NameKind::Container => 128,
            NameKind::Volume => 255,
            NameKind::Network => 64,
        }
    }

    fn what(self) -> &'static str {
        match self {
            NameKind::Container => "container name",
            NameKind::Volume => "volume name",
            NameKind::Network => "network name",
        }
    }
}

/// Why a name is refused: the message and what to write instead. Callers add the place
/// (`file:line:col` in a manifest) or turn it into a [`crate::error::UserError`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameError {
    pub message: String,
    pub hint: String,
}

/// The one name rule of containers and volumes, wherever the name comes from (`--name`,
/// `volume create`, `-v NAME:/path`, a manifest).
pub fn check(kind: NameKind, name: &str) -> Result<(), NameError> {
    if docker_name_ok(name, kind.max_len()) {
        return Ok(());
    }
    let what = kind.what();
    let max = kind.max_len();
    let message = if name.len() > max && docker_name_ok(name, usize::MAX) {
        format!(
            "invalid {what} {:?}...: {} characters, at most {max} are allowed",
            &name[..24],
            name.len()
        )
    } else {
        format!("invalid {what} {name:?}")
    };
    Err(NameError {
        message,
        hint: format!(
            "a {what} is 2 to {max} characters: a letter or digit, then letters, digits, '_', '.' or '-'"
        ),
    })
}

impl From<NameError> for crate::error::UserError {
    fn from(e: NameError) -> Self {
        crate::error::user(e.message).hint(e.hint)
    }
}

/// Checks a user-given container name as docker does: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`, at most
/// 128 characters.
pub fn validate(name: &str) -> Result<(), crate::error::UserError> {
    check(NameKind::Container, name).map_err(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn word_lists_are_large_unique_and_clean() {
        assert!(ADJECTIVES.len() >= 100 && SURNAMES.len() >= 200);
        let a: HashSet<_> = ADJECTIVES.iter().collect();
        let s: HashSet<_> = SURNAMES.iter().collect();
        assert_eq!(a.len(), ADJECTIVES.len());
        assert_eq!(s.len(), SURNAMES.len());
        for w in ADJECTIVES.iter().chain(SURNAMES) {
            assert!(w.bytes().all(|b| b.is_ascii_lowercase()), "{w}");
        }
    }

    #[test]
    fn thousand_generated_names_are_unique_and_valid() {
        let mut seen = HashSet::new();
        for _ in 0..1000 {
            let n = generate(|n| seen.contains(n));
            validate(&n).unwrap();
            assert!(seen.insert(n));
        }
    }

    #[test]
    fn exhausted_picks_get_a_digit_suffix() {
        let n = generate(|n| !n.ends_with(|c: char| c.is_ascii_digit()) || n.ends_with('2'));
        assert!(n.ends_with('3'), "{n}");
    }

    #[test]
    fn validates_like_docker() {
        for ok in ["web", "a1", "my_app.v2-x", "A-b"] {
            validate(ok).unwrap();
        }
        for bad in ["", "a", "-web", "_x", "has space", "a/b", "é1"] {
            assert!(validate(bad).is_err(), "{bad}");
        }
        let long = "a".repeat(128);
        validate(&long).unwrap();
        let e = check(NameKind::Container, &format!("{long}b")).unwrap_err();
        assert!(
            e.message.contains("129 characters, at most 128"),
            "{}",
            e.message
        );
        check(NameKind::Volume, &format!("{long}b")).unwrap();
        assert!(check(NameKind::Volume, &"v".repeat(256)).is_err());
    }
}
