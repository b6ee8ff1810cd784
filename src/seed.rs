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
const BATCH: usize = 50_000;

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
///
/// The next batch is generated on a blocking thread while the store inserts the current one.
/// Creation times rise with the insertion order, as in a real table where ids are handed out
/// as accounts are created: every index over `created_at` then grows at its end instead of
/// at random pages, which is what keeps ten million users within minutes (random creation
/// times rewrote most of those indexes' pages in every batch).
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
    let bar = ProgressBar::new(options.users);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} users ({per_sec:0}, eta {eta})",
        )
        .map_err(|e| e.to_string())?,
    );
    let (batches, mut ready) = tokio::sync::mpsc::channel(1);
    let generator = Generator::new(options, hash);
    let producer = tokio::task::spawn_blocking(move || generator.run(&batches));
    let mut done = 0u64;
    while let Some(batch) = ready.recv().await {
        let users = batch?;
        let len = users.len() as u64;
        store
            .create_users(users, Vec::new())
            .await
            .map_err(|e| format!("seeding failed after {done} users: {e}"))?;
        done += len;
        bar.set_position(done);
    }
    producer.await.map_err(|e| e.to_string())?;
    // The summary goes on its own line, not onto the bar's.
    bar.finish_and_clear();
    Ok((done, started.elapsed()))
}

/// Makes the seeded users, batch by batch.
struct Generator {
    rng: Rng,
    run: String,
    hash: String,
    users: u64,
    superusers_pct: f64,
    inactive_pct: f64,
    /// Creation time of the first user, and the time between consecutive ones.
    first_created: i64,
    step_micros: i64,
}

impl Generator {
    fn new(options: &SeedOptions, hash: String) -> Self {
        let mut rng = Rng::new();
        let run = format!("{:04x}", rng.below(0x10000));
        let span_micros = i64::from(options.days.max(1)) * 86_400_000_000;
        let users = options.users.max(1) as i64;
        Self {
            rng,
            run,
            hash,
            users: options.users,
            superusers_pct: options.superusers_pct,
            inactive_pct: options.inactive_pct,
            first_created: now_micros().timestamp_micros() - span_micros,
            step_micros: (span_micros / users).max(1),
        }
    }

    /// Sends every batch in order; stops early when the receiver is gone (seeding failed).
    fn run(mut self, batches: &tokio::sync::mpsc::Sender<Result<Vec<NewUser>, String>>) {
        let mut done = 0u64;
        while done < self.users {
            let batch = (self.users - done).min(BATCH as u64);
            let users = self.batch(done..done + batch);
            let failed = users.is_err();
            if batches.blocking_send(users).is_err() || failed {
                return;
            }
            done += batch;
        }
    }

    fn batch(&mut self, range: std::ops::Range<u64>) -> Result<Vec<NewUser>, String> {
        let rng = &mut self.rng;
        let mut users = Vec::with_capacity((range.end - range.start) as usize);
        for i in range {
            let first = FIRST[rng.below(FIRST.len() as u64) as usize];
            let last = LAST[rng.below(LAST.len() as u64) as usize];
            let domain = DOMAINS[rng.below(DOMAINS.len() as u64) as usize];
            let local: String = format!("{first}.{last}")
                .to_lowercase()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '.')
                .collect();
            let email = Email::parse(&format!("{local}.{i}.{}@{domain}", self.run))
                .map_err(|e| format!("seed email: {e}"))?;
            let full_name = (!rng.chance(5.0))
                .then(|| FullName::parse(&format!("{first} {last}")))
                .transpose()?;
            // Within its own step, so the order of creation is the order of insertion.
            let created = self.first_created
                + (i as i64) * self.step_micros
                + rng.below(self.step_micros as u64) as i64;
            users.push(NewUser {
                email,
                full_name,
                hashed_password: self.hash.clone(),
                is_active: !rng.chance(self.inactive_pct),
                is_superuser: rng.chance(self.superusers_pct),
                email_verified: true,
                created_at: chrono::DateTime::from_timestamp_micros(created).or(Some(Utc::now())),
            });
        }
        Ok(users)
    }
}
