//! The history as an SVG picture: a row per rank (ranks with the same history share
//! one), its Flux state in the upper stripe and its pod in the lower one, the size asked
//! of Kubernetes above them, each request a mark on the time axis, fluxk8s's actions
//! numbered under the mark they followed and listed below.
//!
//! The time axis is ordinal: between two requests, each stripe's changes are laid out in
//! the order they came, one slot each, ending together at the next request. The picture
//! says what changed in which order and what started it, not how many milliseconds it
//! took; so a simulated run draws the same picture every time, and hours of a live
//! instance are as readable as seconds. Each request's clock time is written at its mark
//! when asked for.
//!
//! Written by hand, as plain text: rectangles, lines and labels, nothing to install.

use std::fmt::Write;

use super::{Change, FluxState, History, PodState};
use crate::model::idset::{IdSet, group_by_key};

/// One history to draw, under its own heading.
#[derive(Debug)]
pub struct Panel<'a> {
    pub heading: String,
    pub history: &'a History,
    /// Only these ranks (all without).
    pub ranks: Option<&'a IdSet>,
    /// Write the UTC clock time of each mark (times are the epoch's); else no time at
    /// all appears, and the same run draws the same picture.
    pub clock: bool,
}

/// Most rows drawn in one panel; more groups are counted, not drawn.
const ROWS_DRAWN: usize = 200;
/// Most actions listed under one panel.
const NOTES_DRAWN: usize = 40;

const MARGIN: f64 = 12.0;
const LABEL_W: f64 = 130.0;
/// Longest row label, in characters.
const LABEL_CHARS: usize = 19;
const SLOT_W: f64 = 22.0;
const STRIPE_H: f64 = 9.0;
const ROW_H: f64 = 2.0 * STRIPE_H + 5.0;
const LINE_H: f64 = 14.0;
/// Width of one character at 11 px, roughly: labels widen their segment to fit.
const CHAR_W: f64 = 6.4;
const LEGEND_W: f64 = 720.0;

const UNKNOWN: &str = "url(#unknown)";

fn flux_colour(state: Option<FluxState>) -> &'static str {
    match state {
        Some(FluxState::Up) => "#009e73",
        Some(FluxState::Drained) => "#e69f00",
        Some(FluxState::Offline) => "#c4c4c4",
        Some(FluxState::Lost) => "#d55e00",
        None => UNKNOWN,
    }
}

fn pod_colour(state: PodState) -> &'static str {
    match state {
        PodState::None => "#ffffff",
        PodState::Pending => "#f0e442",
        PodState::Running => "#0072b2",
        PodState::Terminating => "#cc79a7",
        PodState::Succeeded => "#56b4e9",
        PodState::Failed => "#000000",
        PodState::Unknown => UNKNOWN,
    }
}

const FLUX_LEGEND: [(Option<FluxState>, &str); 5] = [
    (Some(FluxState::Up), "up"),
    (Some(FluxState::Drained), "drained"),
    (Some(FluxState::Offline), "offline"),
    (Some(FluxState::Lost), "lost"),
    (None, "not known"),
];

const POD_LEGEND: [(PodState, &str); 6] = [
    (PodState::None, "no pod"),
    (PodState::Pending, "Pending"),
    (PodState::Running, "Running"),
    (PodState::Terminating, "Terminating"),
    (PodState::Succeeded, "Succeeded"),
    (PodState::Failed, "Failed"),
];

/// One rank's history as drawn: its states at the start, then each change with the
/// segment it falls in. Ranks with equal histories share a row.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct RowHistory {
    flux_start: Option<FluxState>,
    pod_start: PodState,
    pub(super) flux: Vec<(usize, FluxState)>,
    pods: Vec<(usize, PodState)>,
}

/// The stretch of time from one request to the next.
#[derive(Debug)]
pub(super) struct Segment {
    label: String,
    /// Numbers of the actions taken in it.
    actions: Vec<usize>,
    pub(super) slots: usize,
    x: f64,
    width: f64,
}

impl Segment {
    /// Where slot `i` starts.
    fn slot_x(&self, i: usize) -> f64 {
        self.x + self.width * i as f64 / self.slots as f64
    }

    /// Where the `j`-th of `k` changes in one stripe starts: the last one ends the
    /// segment's last slot but one, so each segment opens on the state it inherited.
    pub(super) fn change_x(&self, j: usize, k: usize) -> f64 {
        self.slot_x(self.slots - k + j)
    }

    fn actions_label(&self) -> Option<String> {
        match self.actions.as_slice() {
            [] => None,
            [one] => Some(format!("fluxk8s: {one}")),
            [first, .., last] => Some(format!("fluxk8s: {first}–{last}")),
        }
    }
}

/// A panel, laid out.
#[derive(Debug)]
pub(super) struct Layout {
    heading: String,
    pub(super) segments: Vec<Segment>,
    size_start: Option<u32>,
    sizes: Vec<(usize, u32)>,
    pub(super) groups: Vec<(IdSet, RowHistory)>,
    notes: Vec<String>,
    width: f64,
}

impl Layout {
    pub(super) fn new(panel: &Panel<'_>) -> Layout {
        let history = panel.history;
        let all = IdSet::range(0, history.rows().saturating_sub(1));
        let ids = match (history.rows(), panel.ranks) {
            (0, _) => IdSet::new(),
            (_, Some(only)) => only.intersection(&all),
            (_, None) => all,
        };
        let start = &history.start;
        let mut rows: Vec<RowHistory> = ids
            .iter()
            .map(|k| RowHistory {
                flux_start: start.flux.get(k as usize).copied().flatten(),
                pod_start: start
                    .pods
                    .get(k as usize)
                    .copied()
                    .unwrap_or(PodState::None),
                flux: Vec::new(),
                pods: Vec::new(),
            })
            .collect();
        // Rows are the ids in order: a rank's row is its place among them.
        let mut places = vec![None; history.rows() as usize];
        for (row, k) in ids.iter().enumerate() {
            places[k as usize] = Some(row);
        }
        let row_of = |k: u32| places.get(k as usize).copied().flatten();
        let entries = history.entries(0, panel.ranks);
        let start_label = match entries.first() {
            Some(first) if panel.clock => {
                format!("since {} {}", date(first.time), clock(first.time))
            }
            _ => "start".to_owned(),
        };
        let mut segments = vec![Segment::new(start_label)];
        let mut sizes = Vec::new();
        let mut notes = Vec::new();
        for entry in &entries {
            let at = segments.len() - 1;
            let stamp = if panel.clock {
                format!("{} ", clock(entry.time))
            } else {
                String::new()
            };
            match &entry.change {
                Change::Flux { ranks, state } => {
                    for row in ranks.iter().filter_map(row_of) {
                        rows[row].flux.push((at, *state));
                    }
                }
                Change::Pod { ranks, state } => {
                    for row in ranks.iter().filter_map(row_of) {
                        rows[row].pods.push((at, *state));
                    }
                }
                Change::Size { size } => sizes.push((at, *size)),
                Change::Request { text, .. } => segments.push(Segment::new(stamp + text)),
                Change::Action { text, .. } => {
                    notes.push(format!("{stamp}{text}"));
                    segments[at].actions.push(notes.len());
                }
            }
        }
        let groups: Vec<(IdSet, RowHistory)> = group_by_key(rows.into_iter().zip(ids.iter()))
            .into_iter()
            .map(|group| (group.ids, group.key))
            .collect();
        for (at, segment) in segments.iter_mut().enumerate() {
            let mut most = count_in(&sizes, at);
            for (_, row) in &groups {
                most = most
                    .max(count_in(&row.flux, at))
                    .max(count_in(&row.pods, at));
            }
            // One slot for what the segment inherits, one per change (at least one).
            segment.slots = most.max(1) + 1;
        }
        let mut x = MARGIN + LABEL_W;
        for segment in &mut segments {
            let label = text_width(&segment.label)
                .max(segment.actions_label().as_deref().map_or(0.0, text_width));
            segment.x = x;
            segment.width = (segment.slots as f64 * SLOT_W).max(label + 10.0);
            x += segment.width;
        }
        Layout {
            heading: panel.heading.clone(),
            segments,
            size_start: start.size,
            sizes,
            groups,
            notes,
            width: x + MARGIN,
        }
    }

    fn height(&self) -> f64 {
        let rows = self.groups.len().min(ROWS_DRAWN + 1) as f64;
        let notes = self.notes.len().min(NOTES_DRAWN + 1) as f64;
        // Heading, the marks' two lines, the size line, the rows, a gap, the notes.
        4.0 * LINE_H + rows * ROW_H + LINE_H + notes * LINE_H + LINE_H
    }

    /// Draws the panel with its top at `top`.
    fn draw(&self, out: &mut String, top: f64) {
        let mut y = top + LINE_H;
        text(out, MARGIN, y, "heading", &self.heading);
        let marks_y = y + LINE_H;
        let rows_top = marks_y + 2.0 * LINE_H;
        let rows_bottom = rows_top + self.groups.len().min(ROWS_DRAWN + 1) as f64 * ROW_H;
        for (at, segment) in self.segments.iter().enumerate() {
            text(out, segment.x + 4.0, marks_y, "mark", &segment.label);
            if let Some(label) = segment.actions_label() {
                text(out, segment.x + 4.0, marks_y + LINE_H, "note", &label);
            }
            if at > 0 {
                let _ = writeln!(
                    out,
                    r#"<line class="mark" x1="{x:.1}" y1="{y1:.1}" x2="{x:.1}" y2="{rows_bottom:.1}"/>"#,
                    x = segment.x,
                    y1 = marks_y - LINE_H + 3.0,
                );
            }
        }
        y = rows_top;
        self.draw_sizes(out, y - 3.0);
        for (ids, row) in self.groups.iter().take(ROWS_DRAWN) {
            self.draw_row(out, y, ids, row);
            y += ROW_H;
        }
        if self.groups.len() > ROWS_DRAWN {
            let more = &self.groups[ROWS_DRAWN..];
            let ranks: usize = more.iter().map(|(ids, _)| ids.len()).sum();
            let line = format!(
                "… {} more rows ({ranks} ranks) not drawn: ask for fewer ranks",
                more.len()
            );
            text(out, MARGIN, y + STRIPE_H + 4.0, "note", &line);
        }
        y = rows_bottom + LINE_H;
        for (n, note) in self.notes.iter().enumerate().take(NOTES_DRAWN) {
            text(out, MARGIN, y, "note", &format!("{:>3}  {note}", n + 1));
            y += LINE_H;
        }
        if self.notes.len() > NOTES_DRAWN {
            let line = format!(
                "… and {} more actions (flux k8s history lists them)",
                self.notes.len() - NOTES_DRAWN
            );
            text(out, MARGIN, y, "note", &line);
        }
    }

    /// The size asked of Kubernetes, written where it changes.
    fn draw_sizes(&self, out: &mut String, y: f64) {
        text(out, MARGIN, y, "label", "size");
        if let Some(size) = self.size_start {
            text(out, self.segments[0].x + 2.0, y, "size", &size.to_string());
        }
        for (at, segment) in self.segments.iter().enumerate() {
            let here: Vec<u32> = in_segment(&self.sizes, at).map(|(_, s)| *s).collect();
            for (j, size) in here.iter().enumerate() {
                let x = segment.change_x(j, here.len());
                text(out, x + 2.0, y, "size", &size.to_string());
            }
        }
    }

    fn draw_row(&self, out: &mut String, y: f64, ids: &IdSet, row: &RowHistory) {
        let name = ids.to_string();
        // A scattered group is cut, with its count; the title has it all.
        let shown = if name.chars().count() > LABEL_CHARS {
            let count = format!("… ({})", ids.len());
            let head: String = name
                .chars()
                .take(LABEL_CHARS - count.chars().count())
                .collect();
            format!("{head}{count}")
        } else {
            name.clone()
        };
        let _ = writeln!(
            out,
            r#"<text class="label" x="{:.1}" y="{:.1}" text-anchor="end"><title>ranks {} ({} ranks)</title>{}</text>"#,
            MARGIN + LABEL_W - 6.0,
            y + STRIPE_H + 4.0,
            escape(&name),
            ids.len(),
            escape(&shown)
        );
        let flux: Vec<(usize, &'static str)> = row
            .flux
            .iter()
            .map(|&(at, s)| (at, flux_colour(Some(s))))
            .collect();
        // A frame behind the stripes: a stretch with no pod is white.
        let _ = writeln!(
            out,
            r##"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" fill="none" stroke="#d0d0d0" stroke-width="0.6"/>"##,
            x = self.segments[0].x,
            w = self.width - MARGIN - self.segments[0].x,
            h = 2.0 * STRIPE_H + 1.0,
        );
        self.draw_stripe(out, y, flux_colour(row.flux_start), &flux);
        let pods: Vec<(usize, &'static str)> = row
            .pods
            .iter()
            .map(|&(at, s)| (at, pod_colour(s)))
            .collect();
        self.draw_stripe(out, y + STRIPE_H + 1.0, pod_colour(row.pod_start), &pods);
    }

    /// One stripe: a rectangle per stretch of one colour.
    fn draw_stripe(
        &self,
        out: &mut String,
        y: f64,
        start: &'static str,
        changes: &[(usize, &'static str)],
    ) {
        let mut colour = start;
        let mut from = self.segments[0].x;
        for (at, segment) in self.segments.iter().enumerate() {
            let here: Vec<&'static str> = in_segment(changes, at).map(|(_, c)| *c).collect();
            for (j, next) in here.iter().enumerate() {
                if *next != colour {
                    let x = segment.change_x(j, here.len());
                    rect(out, from, y, x - from, colour);
                    (from, colour) = (x, next);
                }
            }
        }
        rect(out, from, y, self.width - MARGIN - from, colour);
    }
}

impl Segment {
    fn new(label: String) -> Segment {
        Segment {
            label,
            actions: Vec::new(),
            slots: 0,
            x: 0.0,
            width: 0.0,
        }
    }
}

/// The items of `changes` (in segment order) that fall in segment `at`.
fn in_segment<T>(changes: &[(usize, T)], at: usize) -> impl Iterator<Item = &(usize, T)> {
    let from = changes.partition_point(|(s, _)| *s < at);
    changes[from..].iter().take_while(move |(s, _)| *s == at)
}

fn count_in<T>(changes: &[(usize, T)], at: usize) -> usize {
    in_segment(changes, at).count()
}

fn text_width(text: &str) -> f64 {
    text.chars().count() as f64 * CHAR_W
}

fn rect(out: &mut String, x: f64, y: f64, width: f64, fill: &str) {
    if width <= 0.0 {
        return;
    }
    let _ = writeln!(
        out,
        r#"<rect x="{x:.1}" y="{y:.1}" width="{width:.1}" height="{STRIPE_H}" fill="{fill}"/>"#
    );
}

fn text(out: &mut String, x: f64, y: f64, class: &str, content: &str) {
    let _ = writeln!(
        out,
        r#"<text class="{class}" x="{x:.1}" y="{y:.1}">{}</text>"#,
        escape(content)
    );
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `HH:MM:SS` (UTC) of a time in seconds since the epoch.
fn clock(time: f64) -> String {
    let seconds = time.rem_euclid(86_400.0) as u64;
    format!(
        "{:02}:{:02}:{:02}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

/// `YYYY-MM-DD` (UTC) of a time in seconds since the epoch: the days since 1970-01-01
/// counted into years of the proleptic Gregorian calendar, 400-year eras first.
pub(super) fn date(time: f64) -> String {
    let days = (time / 86_400.0).floor() as i64 + 719_468; // since 0000-03-01
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Months from March, so that February's length matters last.
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// The legend: what each colour of each stripe means.
fn draw_legend(out: &mut String, top: f64) {
    let mut row = |y: f64, title: &str, items: &[(&str, &str)]| {
        text(out, MARGIN, y + 9.0, "label", title);
        let mut x = MARGIN + 150.0;
        for (fill, name) in items {
            let _ = writeln!(
                out,
                r##"<rect x="{x:.1}" y="{y:.1}" width="12" height="12" fill="{fill}" stroke="#888" stroke-width="0.5"/>"##
            );
            text(out, x + 16.0, y + 10.0, "label", name);
            x += 26.0 + text_width(name);
        }
    };
    let flux: Vec<(&str, &str)> = FLUX_LEGEND
        .iter()
        .map(|&(s, name)| (flux_colour(s), name))
        .collect();
    row(top, "Flux (upper stripe)", &flux);
    let pods: Vec<(&str, &str)> = POD_LEGEND
        .iter()
        .map(|&(s, name)| (pod_colour(s), name))
        .collect();
    row(top + 18.0, "pod (lower stripe)", &pods);
}

/// The panels one above the other under `title`, with one legend.
pub fn svg(title: &str, panels: &[Panel<'_>]) -> String {
    let layouts: Vec<Layout> = panels.iter().map(Layout::new).collect();
    // The title is drawn at 15 px: about 1.4 times as wide as the 11 px labels.
    let title_w = 1.4 * text_width(title);
    let width = layouts
        .iter()
        .map(|l| l.width)
        .fold(LEGEND_W.max(title_w) + 2.0 * MARGIN, f64::max);
    let panels_height: f64 = layouts.iter().map(Layout::height).sum();
    let height = 2.0 * LINE_H + panels_height + 36.0 + MARGIN;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="DejaVu Sans, Verdana, sans-serif">"#
    );
    out.push_str(concat!(
        "<defs><pattern id=\"unknown\" width=\"4\" height=\"4\" patternUnits=\"userSpaceOnUse\">",
        "<rect width=\"4\" height=\"4\" fill=\"#f4f4f4\"/>",
        "<path d=\"M0,4 L4,0\" stroke=\"#b8b8b8\" stroke-width=\"0.8\"/></pattern></defs>\n",
        "<style>text{font-size:11px;fill:#222}.title{font-size:15px;font-weight:bold}",
        ".heading{font-size:13px;font-weight:bold}.mark{font-size:11px;font-weight:bold}",
        ".note{font-size:10px;fill:#444}.size{font-size:10px;fill:#a00}",
        "line.mark{stroke:#333;stroke-width:1;stroke-dasharray:3,2}</style>\n",
    ));
    let _ = writeln!(
        out,
        r##"<rect width="{width:.0}" height="{height:.0}" fill="#ffffff"/>"##
    );
    text(&mut out, MARGIN, LINE_H + 4.0, "title", title);
    let mut top = 2.0 * LINE_H;
    for layout in &layouts {
        layout.draw(&mut out, top);
        top += layout.height();
    }
    draw_legend(&mut out, top);
    out.push_str("</svg>\n");
    out
}
