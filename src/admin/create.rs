//! Adding users: invite one (they choose their password from the emailed link), or import
//! many from a CSV file through the bulk path (all or nothing; every bad row is reported
//! with its line number and reason, and then nothing is created).

use std::collections::HashMap;

use maud::{Markup, html};
use poem::{Response, handler, http::StatusCode, web::Multipart};

use super::{
    console::{CSRF_FIELD, Console, Posted},
    view::{self, Nav},
};
use crate::{
    domain::fold_email,
    service::{InviteDraft, ServiceError, UserDraft},
};

fn invite_form(console: &Console, problem: Option<Markup>, email: &str, name: &str) -> Markup {
    view::page(
        console,
        "Invite a user",
        Nav::Invite,
        html! {
            @if let Some(problem) = problem { (problem) }
            p.muted { "They get an email with a link to choose their password; until then the account has no usable password." }
            form method="post" action="/admin/invite" {
                (view::csrf_field(console))
                label for="email" { "Email" }
                input id="email" name="email" type="email" required value=(email) autofocus;
                label for="full_name" { "Full name (optional)" }
                input id="full_name" name="full_name" type="text" value=(name);
                label.check { input type="checkbox" name="is_superuser"; "Superuser" }
                div.actions { button type="submit" { "Send invitation" } }
            }
        },
    )
}

#[handler]
pub async fn invite_page(console: Console) -> Response {
    view::ok(invite_form(&console, None, "", ""))
}

#[handler]
pub async fn invite(posted: Posted) -> Response {
    let console = &posted.console;
    let draft = InviteDraft {
        email: posted.text("email").unwrap_or_default().to_string(),
        full_name: posted.text("full_name").map(str::to_string),
        is_superuser: Some(posted.checked("is_superuser")),
    };
    match console
        .state
        .services
        .account
        .invite(&console.caller, draft.clone())
        .await
    {
        Ok(user) => view::redirect(&format!("/admin/users/{}?done=invited", user.id)),
        Err(err) => {
            let (status, message, fields) = view::explain(err);
            let problem = view::problems(&message, &fields);
            let form = invite_form(
                console,
                Some(problem),
                &draft.email,
                draft.full_name.as_deref().unwrap_or(""),
            );
            view::respond(status, form)
        }
    }
}

const COLUMNS: &str = "email,password,full_name,is_active,is_superuser,email_verified";

fn import_form(console: &Console, problems: Option<Markup>) -> Markup {
    view::page(
        console,
        "Import users",
        Nav::Import,
        html! {
            @if let Some(problems) = problems { (problems) }
            p { "A CSV file with a header row. Columns: " code { (COLUMNS) } "; "
                code { "email" } " and " code { "password" } " are required, the flags are "
                code { "true" } " or " code { "false" } " (default: active, not superuser, not verified)." }
            p.muted { "All or nothing: if any row is wrong, nothing is imported and every wrong row is listed." }
            form method="post" action="/admin/import" enctype="multipart/form-data" {
                (view::csrf_field(console))
                label for="file" { "CSV file" }
                input id="file" name="file" type="file" accept=".csv,text/csv" required;
                div.actions { button type="submit" { "Import" } }
            }
        },
    )
}

#[handler]
pub async fn import_page(console: Console) -> Response {
    view::ok(import_form(&console, None))
}

/// A problem of the file: its line (0 for the file as a whole), field and reason.
type Problem = (u64, String, String);

fn flag(value: &str) -> Result<Option<bool>, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "" => Ok(None),
        "true" | "1" | "yes" => Ok(Some(true)),
        "false" | "0" | "no" => Ok(Some(false)),
        _ => Err("must be true or false".into()),
    }
}

/// The drafts of a CSV file and each one's line, or every problem found.
fn parse(data: &[u8]) -> Result<(Vec<UserDraft>, Vec<u64>), Vec<Problem>> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(data);
    let headers: Vec<String> = match reader.headers() {
        Ok(h) => h.iter().map(str::to_ascii_lowercase).collect(),
        Err(e) => return Err(vec![(1, String::new(), format!("unreadable header: {e}"))]),
    };
    let known: Vec<&str> = COLUMNS.split(',').collect();
    let mut problems: Vec<Problem> = headers
        .iter()
        .filter(|h| !known.contains(&h.as_str()))
        .map(|h| (1, h.clone(), format!("is not a column (use {COLUMNS})")))
        .collect();
    for required in ["email", "password"] {
        if !headers.iter().any(|h| h == required) {
            problems.push((1, required.into(), "column is missing".into()));
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let column = |name: &str| headers.iter().position(|h| h == name);
    let (mut drafts, mut lines) = (Vec::new(), Vec::new());
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                problems.push((line, String::new(), format!("unreadable row: {e}")));
                continue;
            }
        };
        let line = record.position().map_or(0, |p| p.line());
        if record.iter().all(str::is_empty) {
            continue;
        }
        let get = |name: &str| column(name).and_then(|i| record.get(i)).unwrap_or("");
        let mut flags = [None; 3];
        for (slot, name) in flags
            .iter_mut()
            .zip(["is_active", "is_superuser", "email_verified"])
        {
            match flag(get(name)) {
                Ok(value) => *slot = value,
                Err(why) => problems.push((line, name.into(), why)),
            }
        }
        let draft = UserDraft {
            email: get("email").to_string(),
            password: get("password").to_string(),
            full_name: Some(get("full_name").to_string()).filter(|n| !n.is_empty()),
            is_active: flags[0],
            is_superuser: flags[1],
            email_verified: flags[2],
        };
        // Checked here too, so one report lists the rows the bulk path would refuse
        // beside the ones that could not be read.
        if let Err(errors) = draft.validate() {
            problems.extend(errors.into_iter().map(|e| (line, e.field, e.message)));
        }
        drafts.push(draft);
        lines.push(line);
    }
    if drafts.is_empty() && problems.is_empty() {
        problems.push((0, String::new(), "the file has no user rows".into()));
    }
    match problems.is_empty() {
        true => Ok((drafts, lines)),
        false => Err(problems),
    }
}

/// The service's refusal of a batch, by line of the file.
fn problems_of(err: ServiceError, drafts: &[UserDraft], lines: &[u64]) -> Vec<Problem> {
    match err {
        ServiceError::Invalid(errors) => errors
            .into_iter()
            .map(|e| {
                let line = e.index.and_then(|i| lines.get(i)).copied().unwrap_or(0);
                (line, e.field, e.message)
            })
            .collect(),
        ServiceError::EmailsTaken(emails) => {
            let taken: HashMap<String, String> =
                emails.into_iter().map(|e| (fold_email(&e), e)).collect();
            let mut seen = HashMap::new();
            let mut problems = Vec::new();
            for (draft, line) in drafts.iter().zip(lines) {
                let key = fold_email(draft.email.trim());
                if taken.contains_key(&key) {
                    let why = match seen.insert(key, *line) {
                        Some(first) => format!("repeats the address of line {first}"),
                        None => "is already taken (or repeated later in the file)".into(),
                    };
                    problems.push((*line, "email".into(), why));
                }
            }
            problems
        }
        other => vec![(0, String::new(), view::explain(other).1)],
    }
}

fn problem_table(problems: &[Problem]) -> Markup {
    html! {
        div.problems role="alert" {
            p { strong { "Nothing was imported. " (problems.len()) " problem(s) in the file:" } }
            div.scroll {
                table {
                    thead { tr { th scope="col" { "Line" } th scope="col" { "Field" } th scope="col" { "Problem" } } }
                    tbody {
                        @for (line, field, why) in problems {
                            tr {
                                td { @if *line > 0 { (line) } @else { "—" } }
                                td { code { (field) } }
                                td { (why) }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[handler]
pub async fn import(console: Console, mut multipart: Multipart) -> Response {
    let (mut csrf, mut data) = (None, None);
    loop {
        match multipart.next_field().await {
            Ok(Some(field)) => match field.name() {
                Some(CSRF_FIELD) => csrf = field.text().await.ok(),
                Some("file") => data = field.bytes().await.ok(),
                _ => {}
            },
            Ok(None) => break,
            Err(_) => break,
        }
    }
    if let Err(forged) = console.check_csrf(csrf.as_deref()) {
        return forged.into_response();
    }
    let refuse = |problems: Vec<Problem>| {
        view::respond(
            StatusCode::UNPROCESSABLE_ENTITY,
            import_form(&console, Some(problem_table(&problems))),
        )
    };
    let Some(data) = data.filter(|d| !d.is_empty()) else {
        return refuse(vec![(
            0,
            "file".into(),
            "choose a CSV file to import".into(),
        )]);
    };
    let (drafts, lines) = match parse(&data) {
        Ok(parsed) => parsed,
        Err(problems) => return refuse(problems),
    };
    match console
        .state
        .services
        .users
        .create_many(&console.caller, drafts.clone())
        .await
    {
        Ok(created) => view::redirect(&format!("/admin/users?done=imported&n={}", created.len())),
        Err(err) => refuse(problems_of(err, &drafts, &lines)),
    }
}
