//! The console's home: the figures, sign-ups per day, active against inactive, health and
//! the caches' hit rates. Charts are SVG drawn here from numbers (no chart library, no
//! script), each with a text equivalent for screen readers.

use maud::{Markup, html};
use poem::{Response, handler};

use super::{
    console::Console,
    view::{self, Nav},
};
use crate::{
    cache::CacheStats,
    domain::DashboardStats,
    service::{SIGNUP_DAYS, SignupSeries},
};

const CHART_WIDTH: u64 = 600;
const CHART_HEIGHT: u64 = 160;
const AXIS_BOTTOM: u64 = 140;

fn signup_chart(series: &SignupSeries) -> Markup {
    let max = series.iter().map(|(_, n)| *n).max().unwrap_or(0).max(1);
    let slot = CHART_WIDTH / SIGNUP_DAYS.max(1);
    let total: u64 = series.iter().map(|(_, n)| n).sum();
    let summary = format!(
        "Sign-ups per day over the last {} days: {total} in all, at most {max} on one day.",
        series.len()
    );
    html! {
        svg.chart viewBox={ "0 0 " (CHART_WIDTH) " " (CHART_HEIGHT) } role="img"
            aria-labelledby="signups-title" {
            title id="signups-title" { (summary) }
            line.axis x1="0" y1=(AXIS_BOTTOM) x2=(CHART_WIDTH) y2=(AXIS_BOTTOM) {}
            @for (i, (day, n)) in series.iter().enumerate() {
                @let height = n * (AXIS_BOTTOM - 10) / max;
                @let x = i as u64 * slot + 2;
                rect.bar x=(x) y=(AXIS_BOTTOM - height) width=(slot.saturating_sub(4)) height=(height) {
                    title { (day.format("%b %-d")) ": " (n) }
                }
                // A label a week, counted back from today so today is labelled.
                @if (series.len() - 1 - i).is_multiple_of(7) {
                    text x=(x) y=(AXIS_BOTTOM + 14) { (day.format("%b %-d")) }
                }
            }
            text x="2" y="12" { "max " (max) }
        }
    }
}

fn active_split(stats: &DashboardStats) -> Markup {
    let total = stats.total_users.max(1);
    let active_width = stats.active_users * 1000 / total;
    html! {
        svg.chart viewBox="0 0 1000 24" role="img" aria-labelledby="split-title" preserveAspectRatio="none" {
            title id="split-title" {
                (stats.active_users) " active and " (stats.inactive_users) " inactive users"
            }
            rect x="0" y="0" width=(active_width) height="24" fill="#1a7f37" {}
            rect x=(active_width) y="0" width=(1000 - active_width) height="24" fill="#d0d7de" {}
        }
        p.muted { (stats.active_users) " active (green) · " (stats.inactive_users) " inactive (grey)" }
    }
}

fn card(figure: impl std::fmt::Display, label: &str) -> Markup {
    html! { div.card { span.figure { (figure) } span.label { (label) } } }
}

fn hit_rate(stats: &CacheStats) -> String {
    if stats.hits + stats.misses == 0 {
        "no lookups yet".into()
    } else {
        format!("{:.1}%", stats.hit_rate() * 100.0)
    }
}

#[handler]
pub async fn page(console: Console) -> Response {
    let services = &console.state.services;
    let (stats, series) = match tokio::try_join!(
        services.users.dashboard(&console.caller),
        services.users.signups_per_day(&console.caller)
    ) {
        Ok(((stats, _), series)) => (stats, series),
        Err(err) => return view::failure_in(&console, err),
    };
    let ready = services.operations.check_ready().await;
    let caches = services.operations.cache_figures().await;
    let body = html! {
        section aria-labelledby="figures" {
            h2 id="figures" { "Users" }
            div.cards {
                (card(stats.total_users, "users in all"))
                (card(stats.active_users, "active"))
                (card(stats.inactive_users, "inactive"))
                (card(stats.superusers, "superusers"))
                (card(stats.new_users_today, "new today (UTC)"))
                (card(stats.new_users_week, "new in 7 days"))
            }
            p.muted { "As of " (view::when(&stats.generated_at)) "." }
        }
        section aria-labelledby="signups" {
            h2 id="signups" { "Sign-ups per day, last " (SIGNUP_DAYS) " days" }
            (signup_chart(&series))
        }
        section aria-labelledby="split" {
            h2 id="split" { "Active and inactive" }
            (active_split(&stats))
        }
        section aria-labelledby="health" {
            h2 id="health" { "Health" }
            dl.facts {
                dt { "Database" }
                dd {
                    (services.operations.backend()) " · "
                    @match &ready {
                        Ok(()) => span.badge.on { "reachable" },
                        Err(_) => span.badge.off { "unreachable" },
                    }
                }
                dt { "Caches" }
                dd { @if caches.enabled { "on" } @else { "off (CACHE_ENABLED=false)" } }
                dt { "User cache hit rate" }
                dd { (hit_rate(&caches.users)) " (" (caches.users.entries) " entries)" }
                dt { "Session cache hit rate" }
                dd { (hit_rate(&caches.sessions)) }
                dt { "Dashboard cache hit rate" }
                dd { (hit_rate(&caches.dashboard)) }
                @if let Some(connected) = caches.listener_connected {
                    dt { "Invalidation listener" }
                    dd { @if connected { "connected" } @else { "reconnecting" } }
                }
            }
        }
    };
    view::ok(view::page(&console, "Dashboard", Nav::Dashboard, body))
}
