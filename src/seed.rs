//! `roster seed`: realistic test data, fast. Test data only: every seeded user shares one
//! password hash.

use std::time::{Duration, Instant};

use chrono::Utc;
use indicatif::{ProgressBar, ProgressStyle};

use crate::{
    auth::PasswordHasher,
    domain::{Email, FullName, NewUser, now_micros},
    store::UserStore,
};

/// The password of every seeded user.
pub const SEED_PASSWORD: &str = "seeded-password";
const BATCH: usize = 10_000;

const FIRST: &[&str] = &[
    "Ada",
    "Alan",
    "Grace",
    "Linus",
    "Margaret",
    "Dennis",
    "Barbara",
    "Ken",
    "Frances",
    "Edsger",
    "Radia",
    "Tim",
    "Katherine",
    "John",
    "Sophie",
    "Niklaus",
    "Hedy",
    "Guido",
    "Anita",
    "Bjarne",
    "Zoë",
    "José",
    "Åsa",
    "Chloé",
    "Søren",
    "Maëlle",
    "Jürgen",
    "Ngozi",
    "Wei",
    "Priya",
];
const LAST: &[&str] = &[
    "Lovelace",
    "Turing",
    "Hopper",
    "Torvalds",
    "Hamilton",
    "Ritchie",
    "Liskov",
    "Thompson",
    "Allen",
    "Dijkstra",
    "Perlman",
    "Berners-Lee",
    "Johnson",
    "McCarthy",
    "Wilson",
    "Wirth",
    "Lamarr",
    "van Rossum",
    "Borg",
    "Stroustrup",
    "O'Neil",
    "Müller",
    "García",
    "Nakamura",
    "Okafor",
    "Singh",
    "Novak",
    "Kowalski",
];
const DOMAINS: &[&str] = &[
    "example.com",
    "example.org",
    "example.net",
    "mail.example",
    "corp.example",
];

pub struct SeedOptions {
    pub users: u64,
    pub superusers_pct: f64,
    pub inactive_pct: f64,
    pub days: u32,
}

/// xorshift64*: plenty for test data, and no dependency.
struct Rng(u64);

impl Rng {
    fn new() -> Self {
        let mut seed = [0u8; 8];
        let _ = getrandom::fill(&mut seed);
        Self(u64::from_le_bytes(seed) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, pct: f64) -> bool {
        (self.next() % 1_000_000) as f64 / 10_000.0 < pct
    }
}

/// Inserts `options.users` users in large transactions; returns how many and how long.
pub async fn seed(
    store: &dyn UserStore,
    hasher: &PasswordHasher,
    options: &SeedOptions,
) -> Result<(u64, Duration), String> {
    let started = Instant::now();
    let hash = hasher
        .hash(SEED_PASSWORD)
        .await
        .map_err(|e| e.to_string())?;
    let mut rng = Rng::new();
    let run = format!("{:04x}", rng.below(0x10000));
    let now = now_micros();
    let span_micros = i64::from(options.days.max(1)) * 86_400_000_000;
    let bar = ProgressBar::new(options.users);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} users ({per_sec:0}, eta {eta})",
        )
        .map_err(|e| e.to_string())?,
    );
    let mut done = 0u64;
    while done < options.users {
        let batch = (options.users - done).min(BATCH as u64);
        let mut users = Vec::with_capacity(batch as usize);
        for i in done..done + batch {
            let first = FIRST[rng.below(FIRST.len() as u64) as usize];
            let last = LAST[rng.below(LAST.len() as u64) as usize];
            let domain = DOMAINS[rng.below(DOMAINS.len() as u64) as usize];
            let local: String = format!("{first}.{last}")
                .to_lowercase()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '.')
                .collect();
            let email = Email::parse(&format!("{local}.{i}.{run}@{domain}"))
                .map_err(|e| format!("seed email: {e}"))?;
            let full_name = (!rng.chance(5.0))
                .then(|| FullName::parse(&format!("{first} {last}")))
                .transpose()?;
            let age = rng.below(span_micros as u64) as i64;
            users.push(NewUser {
                email,
                full_name,
                hashed_password: hash.clone(),
                is_active: !rng.chance(options.inactive_pct),
                is_superuser: rng.chance(options.superusers_pct),
                email_verified: true,
                created_at: chrono::DateTime::from_timestamp_micros(now.timestamp_micros() - age)
                    .or(Some(Utc::now())),
            });
        }
        store
            .create_users(users, Vec::new())
            .await
            .map_err(|e| format!("seeding failed after {done} users: {e}"))?;
        done += batch;
        bar.set_position(done);
    }
    // The summary goes on its own line, not onto the bar's.
    bar.finish_and_clear();
    Ok((done, started.elapsed()))
}
