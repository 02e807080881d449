//! The console's pages, as maud templates: every value from outside is escaped by maud, and
//! shown through [`shown`] (text) or [`attr`] (attribute values), so that no character that
//! could disguise it (`airmy_verify::text::disguises`: U+202E, U+200B, …) is ever served as it
//! is.

use airmy_verify::text::{Part, visible};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use time::OffsetDateTime;

use super::{Role, rfc3339};
use crate::backend::{Entry, EntryState, ListQuery, Order, Page as Listed, Stats};

/// What every page needs: where links start, the title, the forms' token, who is looking.
pub(super) struct Page<'a> {
    pub(super) base: &'a str,
    pub(super) title: &'a str,
    pub(super) csrf: &'a str,
    /// An operator sees the forms; a read-only operator none.
    pub(super) role: Role,
    /// Behind the built-in login: the header has a logout button.
    pub(super) session: bool,
}

/// Text from outside, as markup: each character that could disguise it shown as `\u{…}` in a
/// marked `span.esc` (its code in the `title`), never applied.
pub(super) fn shown(text: &str) -> Markup {
    html! {
        @for part in visible(text).parts() {
            @match part {
                Part::Text(run) => { (run) }
                Part::Escaped(c) => { span.esc title={ "U+" (format!("{:04X}", u32::from(c))) } { (part) } }
            }
        }
    }
}

/// Text from outside as an attribute's value (a hidden field's id, a filter): escaped by maud's
/// rules, and each character that could disguise it written as a character reference
/// (`&#x202e;`), so that the form sends it back exactly while the page never holds it as it is.
pub(super) fn attr(text: &str) -> PreEscaped<String> {
    let mut out = String::with_capacity(text.len());
    for part in visible(text).parts() {
        match part {
            Part::Text(run) => {
                let _ = std::fmt::Write::write_str(&mut maud::Escaper::new(&mut out), run);
            }
            Part::Escaped(c) => out.push_str(&format!("&#x{:x};", u32::from(c))),
        }
    }
    PreEscaped(out)
}

/// `text` for a URL's query (form encoding).
fn enc(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// At most `max` characters of `text`, with an ellipsis when cut.
fn cut(text: &str, max: usize) -> String {
    let mut out: String = text.chars().take(max).collect();
    if text.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

fn age(secs: u64) -> String {
    match secs {
        0..=119 => format!("{secs} s"),
        120..=7199 => format!("{} min", secs / 60),
        7200..=172_799 => format!("{} h", secs / 3600),
        _ => format!("{} days", secs / 86_400),
    }
}

impl<'a> Page<'a> {
    /// A page before any session (the login, a refusal): no navigation, no form token.
    pub(super) fn bare(base: &'a str, title: &'a str) -> Self {
        Self {
            base,
            title,
            csrf: "",
            role: Role::ReadOnly,
            session: false,
        }
    }

    /// A page; `refresh`: reload it every 5 s, at this URL (an entry page reloads without its
    /// one-time notice).
    fn layout(&self, heading: &str, refresh: Option<&str>, body: Markup) -> Markup {
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    @if let Some(url) = refresh { meta http-equiv="refresh" content={ "5; url=" (url) }; }
                    title { (visible(heading).to_string()) " · " (self.title) }
                    link rel="stylesheet" href={ (self.base) "/console.css" };
                }
                body {
                    header {
                        a.brand href=(self.home()) { (self.title) }
                        @if !self.csrf.is_empty() {
                            nav {
                                @for state in EntryState::ALL {
                                    a href={ (self.base) "/entries?state=" (state.as_str()) } { (state.as_str()) }
                                }
                            }
                            @if !self.role.can_act() { span.role #role { "read-only" } }
                            @if self.session {
                                form.logout method="post" action={ (self.base) "/logout" } {
                                    (self.csrf_field())
                                    button #logout type="submit" { "Log out" }
                                }
                            }
                        }
                    }
                    main {
                        h1 { (shown(heading)) }
                        (body)
                    }
                }
            }
        }
    }

    /// The overview's link: the mount path itself (axum's `nest` answers `/console`, not
    /// `/console/`), or `/` at the root.
    pub(super) fn home(&self) -> &str {
        if self.base.is_empty() { "/" } else { self.base }
    }

    /// The session cookie's `Path`: the mount path, or `/`.
    pub(super) fn cookie_path(&self) -> &str {
        self.home()
    }

    /// The built-in login's form; `failed`: after a wrong token.
    pub(super) fn login(&self, failed: bool) -> Markup {
        self.layout(
            "Log in",
            None,
            html! {
                @if failed { p.notice #login-failed { "That is not a token of this console." } }
                form.actions method="post" action={ (self.base) "/login" } {
                    label for="token" { "Console token" }
                    input #token type="password" name="token" autocomplete="current-password" required;
                    button #login type="submit" { "Log in" }
                }
            },
        )
    }

    fn csrf_field(&self) -> Markup {
        html! { input type="hidden" name="csrf" value=(self.csrf); }
    }

    pub(super) fn entry_link(&self, id: &str, replayed: bool) -> String {
        format!(
            "{}/entry?id={}{}",
            self.base,
            enc(id),
            if replayed { "&replayed=1" } else { "" }
        )
    }

    pub(super) fn message(&self, heading: &str, text: &str) -> Markup {
        self.layout(
            heading,
            None,
            html! {
                p.notice { (shown(text)) }
                p { a href=(self.home()) { "Back to the overview" } }
            },
        )
    }

    pub(super) fn done(&self, text: &str) -> Markup {
        self.message("Done", text)
    }

    pub(super) fn overview(
        &self,
        stats: &Stats,
        now: OffsetDateTime,
        window: Option<std::time::Duration>,
    ) -> Markup {
        let window = window.map_or_else(
            || "the verifier checks no freshness: every purge is inside it".to_owned(),
            |window| format!("the last {}", crate::shown_duration(window)),
        );
        let purge_default = rfc3339(now - time::Duration::days(7));
        let home = self.home().to_owned();
        self.layout(
            "Overview",
            Some(&home),
            html! {
                section.counts {
                    @for state in EntryState::ALL {
                        a.count.(state.as_str()) href={ (self.base) "/entries?state=" (state.as_str()) } {
                            span.n id={ "count-" (state.as_str()) } { (state.count(stats)) }
                            span.label { (state.as_str()) }
                        }
                    }
                }
                p #oldest {
                    "Oldest pending: "
                    @match stats.oldest_pending_age_secs {
                        Some(secs) => { strong { (age(secs)) } " waiting" }
                        None => { "none" }
                    }
                }
                p.muted { "Refreshes every 5 seconds. " span.time { (rfc3339(now)) } }
                @if self.role.can_act() { section.actions {
                    h2 { "Actions" }
                    p {
                        a.button href={ (self.base) "/replay-dead" } { "Replay every dead letter…" }
                    }
                    form method="post" action={ (self.base) "/purge" } {
                        (self.csrf_field())
                        label for="before" { "Purge processed entries finished before" }
                        input #before type="text" name="before" value=(purge_default) required
                            pattern="\\d{4}-\\d{2}-\\d{2}T.*" title="An RFC 3339 time, such as 2026-12-01T00:00:00Z";
                        label.check {
                            input type="checkbox" name="force" value="yes";
                            " even inside the deduplication window (" (window) ")"
                        }
                        button type="submit" { "Purge" }
                    }
                } }
            },
        )
    }

    fn list_link(&self, list: &ListQuery, after: Option<&str>) -> String {
        let mut link = format!("{}/entries?state={}", self.base, list.state.as_str());
        if let Some(t) = &list.event_type {
            link.push_str(&format!("&type={}", enc(t)));
        }
        if let Some(p) = &list.id_prefix {
            link.push_str(&format!("&prefix={}", enc(p)));
        }
        if list.order == Order::Newest {
            link.push_str("&order=newest");
        }
        if let Some(after) = after {
            link.push_str(&format!("&after={}", enc(after)));
        }
        link
    }

    /// One state's page. No count in the heading: counting costs a scan of the state's index
    /// (a fifth of a second for 900,000 done entries on PostgreSQL), the page itself a
    /// millisecond; the overview has the counts.
    pub(super) fn entries(&self, list: &ListQuery, listed: &Listed) -> Markup {
        let state = list.state;
        let heading = state.as_str().to_owned();
        let when = match state {
            EntryState::Pending | EntryState::Scheduled | EntryState::Paused => "due",
            EntryState::Processing => "lease until",
            EntryState::Dead => "died",
            EntryState::Done => "done",
        };
        self.layout(
            &heading,
            None,
            html! {
                form.filters method="get" action={ (self.base) "/entries" } {
                    input type="hidden" name="state" value=(state.as_str());
                    input type="text" name="type" placeholder="event type" value=[list.event_type.as_deref().map(attr)];
                    input type="text" name="prefix" placeholder="id prefix" value=[list.id_prefix.as_deref().map(attr)];
                    select name="order" {
                        option value="oldest" selected[list.order == Order::Oldest] { "oldest first" }
                        option value="newest" selected[list.order == Order::Newest] { "newest first" }
                    }
                    button type="submit" { "Filter" }
                }
                @if listed.entries.is_empty() {
                    p.notice #empty {
                        @if listed.next.is_some() { "No match among the entries examined; the next page goes on." }
                        @else { "No entries." }
                    }
                } @else {
                    div.scroll {
                        table #entries {
                            thead { tr {
                                th { "id" } th { "type" } th { "attempts" } th { "received" }
                                th { (when) }
                                th { "last error" }
                            } }
                            tbody {
                                @for e in &listed.entries {
                                    tr {
                                        td.id data-label="id" { a href=(self.entry_link(&e.id, false)) { (shown(&cut(&e.id, 64))) } }
                                        td data-label="type" { (shown(&cut(&e.event_type, 40))) }
                                        td.num data-label="attempts" { (e.attempts) }
                                        td.time data-label="received" { (rfc3339(e.received_at)) }
                                        td.time data-label=(when) { @if let Some(at) = e.next_attempt_at.or(e.finished_at) { (rfc3339(at)) } }
                                        td.error data-label="last error" { @if let Some(error) = &e.last_error { (shown(&cut(error, 120))) } }
                                    }
                                }
                            }
                        }
                    }
                }
                p.paging {
                    @if list.after.is_some() { a href=(self.list_link(list, None)) { "« first page" } " " }
                    @if let Some(next) = &listed.next { a #next href=(self.list_link(list, Some(next))) { "next page »" } }
                }
            },
        )
    }

    pub(super) fn entry(&self, entry: &Entry, replayed: bool) -> Markup {
        let e = &entry.summary;
        let body = entry.pretty_body();
        let settled = matches!(e.state, EntryState::Dead | EntryState::Done);
        let again = self.entry_link(&e.id, false);
        self.layout(
            &format!("Entry {}", cut(&e.id, 64)),
            (!settled).then_some(again.as_str()),
            html! {
                @if replayed {
                    p.notice #replayed {
                        "Replayed: the entry is due again with a new retry budget. "
                        a href=(again) { "Hide this notice" }
                    }
                }
                dl.fields {
                    dt { "id" } dd #id { (shown(&e.id)) }
                    dt { "type" } dd #type { (shown(&e.event_type)) }
                    dt { "state" } dd #state { span.state.(e.state.as_str()) { (e.state.as_str()) } }
                    dt { "attempts" } dd #attempts { (e.attempts) }
                    dt { "received" } dd { (rfc3339(e.received_at)) }
                    @if let Some(at) = e.next_attempt_at {
                        dt { @if e.state == EntryState::Processing { "lease until" } @else { "due" } }
                        dd { (rfc3339(at)) }
                    }
                    @if let Some(at) = e.finished_at {
                        dt { @if e.state == EntryState::Dead { "died" } @else { "done" } }
                        dd { (rfc3339(at)) }
                    }
                    @if let Some(error) = &e.last_error { dt { "last error" } dd #error { (shown(error)) } }
                }
                @if self.role.can_act() && e.state != EntryState::Processing && e.state != EntryState::Pending {
                    form method="post" action={ (self.base) "/replay" } {
                        (self.csrf_field())
                        input type="hidden" name="id" value=(attr(&e.id));
                        button #replay type="submit" { "Replay" }
                    }
                }
                h2 { "Body" }
                pre #body {
                    @for (i, line) in body.split('\n').enumerate() {
                        @if i > 0 { "\n" }
                        (shown(line))
                    }
                }
                @if !settled { p.muted { "Refreshes every 5 seconds until the entry is done or dead." } }
            },
        )
    }

    pub(super) fn confirm_replay_dead(&self, dead: u64) -> Markup {
        self.layout(
            "Replay every dead letter",
            None,
            html! {
                p { "This makes " strong { (dead) } " dead letter(s) pending again, each with a new retry budget." }
                @if self.role.can_act() {
                    form method="post" action={ (self.base) "/replay-dead" } {
                        (self.csrf_field())
                        input type="hidden" name="confirm" value="yes";
                        button #confirm type="submit" { "Replay them all" }
                        " "
                        a href=(self.home()) { "Cancel" }
                    }
                } @else {
                    p.notice #read-only { "You have read-only access: an operator can replay them." }
                }
            },
        )
    }
}
