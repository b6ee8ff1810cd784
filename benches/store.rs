//! Store-level benchmarks on seeded databases (`cargo bench`).
//!
//! SQLite always; PostgreSQL too when BENCH_POSTGRES_URL (or TEST_POSTGRES_URL) names a
//! server. Sizes from BENCH_SIZES (default 1000,10000,100000,1000000). Seeded databases
//! are kept in target/bench-data and reused across runs.

use std::{collections::HashMap, hint::black_box, sync::Arc, time::Duration};

use chrono::Utc;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use roster::{
    auth::PasswordHasher,
    config::Settings,
    domain::{
        Email, Keyset, NewUser, PageRequest, SortDirection, SortField, UserFilter, UserQuery,
        UserSort,
    },
    seed::{SeedOptions, seed},
    store::{self, UserStore},
};
use tokio::runtime::Runtime;

fn sizes() -> Vec<u64> {
    std::env::var("BENCH_SIZES")
        .unwrap_or_else(|_| "1000,10000,100000,1000000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

fn postgres_server() -> Option<String> {
    std::env::var("BENCH_POSTGRES_URL")
        .or_else(|_| std::env::var("TEST_POSTGRES_URL"))
        .ok()
}

fn settings(url: &str) -> Settings {
    let vars: HashMap<String, String> = [("DATABASE_URL", url), ("DB_POOL_SIZE", "5")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Settings::from_map(&vars).expect("bench settings")
}

async fn open(url: &str) -> Arc<dyn UserStore> {
    let settings = settings(url);
    let store = store::connect(&settings.database_url, settings.db_pool_size)
        .await
        .expect("store opens");
    store.migrate().await.expect("migrations apply");
    store
}

fn database_url(backend: &str, name: &str) -> String {
    match backend {
        "sqlite" => {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-data");
            std::fs::create_dir_all(&dir).expect("bench data dir");
            format!("sqlite://{}", dir.join(format!("{name}.db")).display())
        }
        _ => {
            let server = postgres_server().expect("a PostgreSQL server");
            let name = format!("roster_bench_{name}");
            let _ = std::process::Command::new("psql")
                .args([server.as_str(), "-qc", &format!("CREATE DATABASE {name}")])
                .stderr(std::process::Stdio::null())
                .status();
            format!(
                "{}/{name}",
                server
                    .rsplit_once('/')
                    .map_or(server.as_str(), |(root, _)| root)
            )
        }
    }
}

/// A database holding exactly `n` seeded users, created once and reused.
async fn seeded(backend: &str, n: u64) -> Arc<dyn UserStore> {
    let url = database_url(backend, &format!("users_{n}"));
    let store = open(&url).await;
    let count = store.count_users().await.expect("count");
    if count != n {
        assert_eq!(
            count, 0,
            "{url} holds {count} users, not {n}: delete it to reseed"
        );
        let hasher = PasswordHasher::new(&settings(&url).argon2).expect("hasher");
        let options = SeedOptions {
            users: n,
            superusers_pct: 2.0,
            inactive_pct: 10.0,
            days: 365,
        };
        seed(store.as_ref(), &hasher, &options).await.expect("seed");
        if backend == "postgres" {
            let _ = std::process::Command::new("psql")
                .args([url.as_str(), "-qc", "VACUUM ANALYZE users"])
                .status();
        }
    }
    store
}

fn active_page(page: u64) -> UserQuery {
    UserQuery {
        filter: UserFilter {
            is_active: Some(true),
            ..UserFilter::default()
        },
        sort: UserSort {
            field: SortField::CreatedAt,
            direction: SortDirection::Desc,
        },
        page: PageRequest::new(page, 50).expect("page"),
    }
}

fn backends() -> Vec<&'static str> {
    let mut list = vec!["sqlite"];
    if postgres_server().is_some() {
        list.push("postgres");
    }
    list
}

fn reads(c: &mut Criterion) {
    let rt = Runtime::new().expect("runtime");
    for backend in backends() {
        let mut group = c.benchmark_group(format!("{backend}/reads"));
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(3));
        for n in sizes() {
            let store = rt.block_on(seeded(backend, n));
            group.bench_with_input(BenchmarkId::new("dashboard_aggregate", n), &n, |b, _| {
                b.iter(|| {
                    rt.block_on(store.dashboard_stats(Utc::now()))
                        .expect("stats")
                })
            });
            if n <= 100_000 {
                // The "before" approach: every row to the application, counted there.
                group.bench_with_input(
                    BenchmarkId::new("dashboard_load_all_rows_count_in_rust", n),
                    &n,
                    |b, _| {
                        b.iter(|| {
                            rt.block_on(async {
                                let all = UserQuery {
                                    filter: UserFilter::default(),
                                    ..active_page(1)
                                };
                                let mut chunks = store.export_users(&all, None);
                                let (mut total, mut active, mut superusers) = (0u64, 0u64, 0u64);
                                while let Some(chunk) = chunks.recv().await {
                                    for user in chunk.expect("rows") {
                                        total += 1;
                                        active += u64::from(user.is_active);
                                        superusers += u64::from(user.is_superuser);
                                    }
                                }
                                black_box((total, active, superusers))
                            })
                        })
                    },
                );
            }
            group.bench_with_input(
                BenchmarkId::new("list_page_1_active_newest_counted", n),
                &n,
                |b, _| {
                    b.iter(|| {
                        rt.block_on(store.list_users(&active_page(1), None))
                            .expect("page")
                    })
                },
            );
            // Offset pages with the total from a fresh dashboard query: the first, page 100,
            // and from a million users page 10,000 (rows 499,951–500,000), which the cursor
            // pages below replace.
            for page in [1u64, 100, 10_000] {
                let name = match page {
                    10_000 if n < 1_000_000 => continue,
                    10_000 => "offset_page_10000_active_newest_total_from_dashboard".to_string(),
                    _ => format!("list_page_{page}_active_newest_total_from_dashboard"),
                };
                group.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                    b.iter(|| {
                        rt.block_on(async {
                            let stats = store.dashboard_stats(Utc::now()).await.expect("stats");
                            store
                                .list_users(&active_page(page), Some(stats.active_users))
                                .await
                                .expect("page")
                        })
                    })
                });
            }
            group.bench_with_input(BenchmarkId::new("user_by_id", n), &n, |b, _| {
                let mut id = 0;
                b.iter(|| {
                    // A different user each time, spread over the whole table.
                    id = (id + 7_919) % n as i64;
                    rt.block_on(store.get_user(id + 1)).expect("user")
                })
            });
            // Keyset (cursor) pages of 50 at three depths of the same walk: the cursor is the
            // last row of the page before, as the API hands it out.
            for (depth, percent) in [("start", 0u64), ("middle", 50), ("end", 99)] {
                let query = active_page(1);
                let after = (percent > 0).then(|| {
                    let id = (n * (100 - percent) / 100).max(1) as i64;
                    let user = rt
                        .block_on(store.get_user(id))
                        .expect("user")
                        .expect("a seeded user");
                    Keyset::of(&user, SortField::CreatedAt)
                });
                group.bench_with_input(
                    BenchmarkId::new(format!("cursor_page_{depth}_active_newest"), n),
                    &n,
                    |b, _| {
                        b.iter(|| {
                            rt.block_on(store.list_users_after(&query, after.as_ref(), 50))
                                .expect("page")
                        })
                    },
                );
            }
            let search = UserQuery {
                filter: UserFilter {
                    search: Some("lovelace.12".into()),
                    ..UserFilter::default()
                },
                ..active_page(1)
            };
            group.bench_with_input(
                BenchmarkId::new("search_3plus_chars_page_1_counted", n),
                &n,
                |b, _| {
                    b.iter(|| {
                        rt.block_on(store.list_users(&search, None))
                            .expect("search")
                    })
                },
            );
        }
        group.finish();
    }
}

fn bulk(c: &mut Criterion) {
    let rt = Runtime::new().expect("runtime");
    let hasher = PasswordHasher::new(
        &Settings::from_map(&HashMap::new())
            .expect("defaults")
            .argon2,
    )
    .expect("hasher");
    let hash = rt.block_on(hasher.hash("bench-password")).expect("hash");
    let mut serial = 0u64;
    for backend in backends() {
        // A scratch database: these benches add rows on every run.
        let store = rt.block_on(open(&database_url(backend, "bulk_scratch")));
        let mut group = c.benchmark_group(format!("{backend}/bulk_insert"));
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(3));
        let mut batch = |n: usize, hashed: Option<&str>| -> Vec<NewUser> {
            (0..n)
                .map(|_| {
                    serial += 1;
                    NewUser {
                        email: Email::parse(&format!(
                            "bulk-{serial}-{}@bench.example",
                            std::process::id()
                        ))
                        .expect("email"),
                        full_name: None,
                        hashed_password: hashed.unwrap_or_default().to_string(),
                        is_active: true,
                        is_superuser: false,
                        email_verified: false,
                        created_at: None,
                    }
                })
                .collect()
        };
        for n in [10usize, 50, 100] {
            group.bench_with_input(
                BenchmarkId::new("one_transaction_db_only", n),
                &n,
                |b, &n| {
                    b.iter_batched(
                        || batch(n, Some(&hash)),
                        |users| {
                            rt.block_on(store.create_users(users, Vec::new()))
                                .expect("insert")
                        },
                        criterion::BatchSize::SmallInput,
                    )
                },
            );
            group.bench_with_input(
                BenchmarkId::new("transaction_per_user_db_only", n),
                &n,
                |b, &n| {
                    b.iter_batched(
                        || batch(n, Some(&hash)),
                        |users| {
                            rt.block_on(async {
                                for user in users {
                                    store
                                        .create_user(user, Default::default())
                                        .await
                                        .expect("insert");
                                }
                            })
                        },
                        criterion::BatchSize::SmallInput,
                    )
                },
            );
            group.bench_with_input(
                BenchmarkId::new("one_transaction_with_argon2_on_all_cores", n),
                &n,
                |b, &n| {
                    b.iter_batched(
                        || batch(n, None),
                        |mut users| {
                            rt.block_on(async {
                                let hashes = hasher
                                    .hash_many(vec!["bench-password".to_string(); users.len()])
                                    .await
                                    .expect("hashes");
                                for (user, hash) in users.iter_mut().zip(hashes) {
                                    user.hashed_password = hash;
                                }
                                store.create_users(users, Vec::new()).await.expect("insert")
                            })
                        },
                        criterion::BatchSize::SmallInput,
                    )
                },
            );
            group.bench_with_input(
                BenchmarkId::new("transaction_per_user_with_argon2_one_at_a_time", n),
                &n,
                |b, &n| {
                    b.iter_batched(
                        || batch(n, None),
                        |users| {
                            rt.block_on(async {
                                for mut user in users {
                                    user.hashed_password =
                                        hasher.hash("bench-password").await.expect("hash");
                                    store
                                        .create_user(user, Default::default())
                                        .await
                                        .expect("insert");
                                }
                            })
                        },
                        criterion::BatchSize::SmallInput,
                    )
                },
            );
        }
        group.finish();
    }
}

criterion_group!(benches, reads, bulk);
criterion_main!(benches);
