//! The screens: pure functions from [`App`] to a frame. Only the 16 ANSI colours, box drawing
//! and block characters are used, so the Linux console and serial terminals show everything;
//! every screen fits 80x24 and uses more room when there is more.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{
    Block, Borders, Cell, Clear, HighlightSpacing, Padding, Paragraph, Row, Table, TableState, Wrap,
};
use ratatui::Frame;

use crate::engine::save::human_bytes;
use crate::tui::app::{App, Field, Flow, LogKind, Outcome, Popup, ProgressState, Screen, MENU};
use crate::tui::data::{DiskInfo, ImageEntry};

const SELECTED: Style = Style::new().add_modifier(Modifier::REVERSED);
const DIM: Style = Style::new().fg(Color::DarkGray);
const WARN: Style = Style::new().fg(Color::Yellow);
const DANGER: Style = Style::new().fg(Color::Red).add_modifier(Modifier::BOLD);
const GOOD: Style = Style::new().fg(Color::Green).add_modifier(Modifier::BOLD);
const HEADER: Style = Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD);
const SEGMENT_COLOURS: [Color; 6] = [
    Color::Blue,
    Color::Magenta,
    Color::Cyan,
    Color::Green,
    Color::Yellow,
    Color::Red,
];

/// Draws the whole screen.
pub fn render(app: &App, f: &mut Frame) {
    let area = f.area();
    let notice_h = match &app.notice {
        Some(n) if n.text.chars().count() + 2 > usize::from(area.width) => 2,
        Some(_) => 1,
        None => 0,
    };
    let [title, body, notice, help] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(notice_h),
        Constraint::Length(1),
    ])
    .areas(area);
    render_title(app, f, title);
    match app.screen {
        Screen::Start => render_start(app, f, body),
        Screen::Disks => render_disks(app, f, body),
        Screen::Repo => render_repo(app, f, body),
        Screen::Images => render_images(app, f, body),
        Screen::Options => render_options(app, f, body),
        Screen::Summary => render_summary(app, f, body),
        Screen::Confirm => render_confirm(app, f, body),
        Screen::Progress => render_progress(app, f, body),
        Screen::Result => render_result(app, f, body),
    }
    if let Some(n) = &app.notice {
        let style = if n.error { DANGER } else { WARN };
        f.render_widget(
            Paragraph::new(Span::styled(n.text.as_str(), style))
                .wrap(Wrap { trim: false })
                .block(Block::new().padding(Padding::horizontal(1))),
            notice,
        );
    }
    render_help(app, f, help);
    if let Some(b) = &app.busy {
        popup(
            f,
            body,
            "Please wait",
            vec![Line::from(b.as_str())],
            Style::new(),
        );
    }
    if let Some(p) = app.popup {
        let (title, text) = match p {
            Popup::CancelJob => (
                "Stop?",
                match app.flow {
                    Flow::Save => {
                        "Stop the save? The partial image is removed; the disk is not changed."
                    }
                    Flow::Restore => {
                        "Stop the restore? The target is left half written: it will not \
                         work until an image is restored onto it."
                    }
                    Flow::Verify => "Stop the verification? Nothing was changed.",
                },
            ),
            Popup::Reboot => ("Reboot", "Reboot the machine now?"),
            Popup::PowerOff => ("Power off", "Power the machine off now?"),
        };
        popup(
            f,
            body,
            title,
            vec![
                Line::from(text),
                Line::from(""),
                Line::from("y = yes    n or Esc = no"),
            ],
            WARN,
        );
    }
}

fn popup(f: &mut Frame, area: Rect, title: &str, lines: Vec<Line<'_>>, style: Style) {
    let w = area.width.saturating_sub(4).min(64);
    let inner_w = w.saturating_sub(4).max(1);
    let text_h: u16 = lines
        .iter()
        .map(|l| (l.width() as u16).div_ceil(inner_w).max(1))
        .sum();
    let h = (text_h + 2).min(area.height);
    let r = Rect {
        x: area.x + (area.width.saturating_sub(w)) / 2,
        y: area.y + (area.height.saturating_sub(h)) / 2,
        width: w,
        height: h,
    };
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(lines).wrap(Wrap { trim: true }).block(
            Block::bordered()
                .title(format!(" {title} "))
                .border_style(style)
                .padding(Padding::horizontal(1)),
        ),
        r,
    );
}

fn steps(flow: Flow) -> &'static [(&'static str, Screen)] {
    match flow {
        Flow::Save => &[
            ("disk", Screen::Disks),
            ("repository", Screen::Repo),
            ("options", Screen::Options),
            ("summary", Screen::Summary),
            ("run", Screen::Progress),
        ],
        Flow::Restore => &[
            ("repository", Screen::Repo),
            ("image", Screen::Images),
            ("target disk", Screen::Disks),
            ("options", Screen::Options),
            ("summary", Screen::Summary),
            ("confirm", Screen::Confirm),
            ("run", Screen::Progress),
        ],
        Flow::Verify => &[
            ("repository", Screen::Repo),
            ("image", Screen::Images),
            ("summary", Screen::Summary),
            ("run", Screen::Progress),
        ],
    }
}

fn render_title(app: &App, f: &mut Frame, area: Rect) {
    let mut text = " ferroclone".to_string();
    if app.screen != Screen::Start {
        text.push_str(" - ");
        text.push_str(app.flow.title());
        let s = steps(app.flow);
        let current = if app.screen == Screen::Result {
            Some((s.len(), "result"))
        } else {
            s.iter()
                .position(|(_, sc)| *sc == app.screen)
                .map(|i| (i + 1, s[i].0))
        };
        if let Some((n, name)) = current {
            let n = n.min(s.len());
            text.push_str(&format!(" - step {n} of {}: {name}", s.len()));
        }
    }
    f.render_widget(
        Paragraph::new(text).style(
            Style::new()
                .fg(Color::White)
                .bg(Color::Blue)
                .add_modifier(Modifier::BOLD),
        ),
        area,
    );
}

fn render_help(app: &App, f: &mut Frame, area: Rect) {
    let mut spans = vec![Span::raw(" ")];
    for (k, what) in app.help() {
        spans.push(Span::styled(k, SELECTED));
        spans.push(Span::raw(format!(" {what}  ")));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn block(title: &str) -> Block<'static> {
    Block::bordered()
        .title(Span::styled(format!(" {title} "), HEADER))
        .borders(Borders::ALL)
        .padding(Padding::horizontal(1))
}

/// `s` cut to `w` characters, keeping the end (paths): `..st-abc/src.img`.
pub fn keep_end(s: &str, w: usize) -> String {
    let n = s.chars().count();
    if n <= w {
        return s.to_string();
    }
    if w <= 2 {
        return s.chars().skip(n - w).collect();
    }
    let tail: String = s.chars().skip(n - (w - 2)).collect();
    format!("..{tail}")
}

/// `h:mm:ss`.
pub fn hms(secs: f64) -> String {
    let s = if secs.is_finite() && secs > 0.0 {
        secs.round() as u64
    } else {
        0
    };
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

fn rate(bytes: u64, secs: f64) -> String {
    if secs <= 0.0 {
        return "-".into();
    }
    format!("{}/s", human_bytes((bytes as f64 / secs) as u64))
}

fn render_start(app: &App, f: &mut Frame, area: Rect) {
    let [menu_area, about_area] = Layout::vertical([
        Constraint::Length(MENU.len() as u16 + 2),
        Constraint::Min(0),
    ])
    .areas(area);
    let lines: Vec<Line> = MENU
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let mark = if i == app.menu { '>' } else { ' ' };
            let mut spans = vec![Span::raw(format!("{mark}{}  {}", i + 1, item.label()))];
            if *item == crate::tui::app::MenuItem::Clone {
                spans.push(Span::styled("  (not available yet)", DIM));
            }
            let line = Line::from(spans);
            if i == app.menu {
                line.style(SELECTED)
            } else {
                line
            }
        })
        .collect();
    f.render_widget(
        Paragraph::new(lines).block(block("What do you want to do?")),
        menu_area,
    );
    let item = MENU[app.menu.min(MENU.len() - 1)];
    let mut about = vec![Line::from(item.about()), Line::from("")];
    about.push(Line::from(vec![
        Span::styled("Repository: ", HEADER),
        Span::raw(if app.repo_input.is_empty() {
            "none chosen yet (you will be asked)".to_string()
        } else {
            app.repo_input.clone()
        }),
    ]));
    if !app.setup.extra_disks.is_empty() {
        about.push(Line::from(vec![
            Span::styled("Disk files: ", HEADER),
            Span::raw(
                app.setup
                    .extra_disks
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
        ]));
    }
    f.render_widget(
        Paragraph::new(about).wrap(Wrap { trim: true }).block(
            Block::new()
                .borders(Borders::NONE)
                .padding(ratatui::widgets::Padding::horizontal(1)),
        ),
        about_area,
    );
}

/// The note shown for a disk in the picker, and whether it blocks choosing it.
fn disk_note(app: &App, d: &DiskInfo) -> (String, Style, bool) {
    let save = app.flow == Flow::Save;
    if !d.exists {
        return if save {
            ("new file".into(), DIM, true)
        } else {
            ("new file".into(), Style::new(), false)
        };
    }
    if d.holds_repo {
        return ("repository".into(), DANGER, true);
    }
    if save {
        if d.error.is_some() {
            return ("unreadable".into(), DANGER, true);
        }
        if d.in_use.is_some() {
            return ("mounted".into(), WARN, false);
        }
    } else {
        if d.in_use.is_some() {
            return ("mounted".into(), DANGER, true);
        }
        if d.read_only {
            return ("read-only".into(), DANGER, true);
        }
        if d.error.is_some() {
            return ("no table".into(), WARN, false);
        }
    }
    (String::new(), Style::new(), false)
}

fn render_disks(app: &App, f: &mut Frame, area: Rect) {
    let title = match app.flow {
        Flow::Save => "Choose the disk to save",
        _ => "Choose the disk to write the image onto",
    };
    let rows_h = (app.disks.len() as u16 + 3).min(area.height / 2).max(4);
    let [list, detail] =
        Layout::vertical([Constraint::Length(rows_h), Constraint::Min(6)]).areas(area);
    let wide = area.width >= 120;
    let path_w = if wide { 34 } else { 18 };
    let widths = [
        Constraint::Length(path_w),
        Constraint::Length(10),
        Constraint::Length(if wide { 24 } else { 13 }),
        Constraint::Length(if wide { 20 } else { 9 }),
        Constraint::Length(6),
        Constraint::Length(3),
        Constraint::Min(8),
    ];
    let header =
        Row::new(["DISK", "      SIZE", "MODEL", "SERIAL", "BUS", "RM", "NOTE"]).style(HEADER);
    let rows: Vec<Row> = app
        .disks
        .iter()
        .map(|d| {
            let (note, style, blocked) = disk_note(app, d);
            let row = Row::new(vec![
                Cell::from(keep_end(&d.path.display().to_string(), usize::from(path_w))),
                Cell::from(format!("{:>10}", human_bytes(d.size))),
                Cell::from(d.model.clone()),
                Cell::from(d.serial.clone()),
                Cell::from(d.transport.clone()),
                Cell::from(if d.removable { "yes" } else { "" }),
                Cell::from(Span::styled(note, style)),
            ]);
            if blocked {
                row.style(DIM)
            } else {
                row
            }
        })
        .collect();
    let table = Table::new(rows, widths)
        .header(header)
        .row_highlight_style(SELECTED)
        .highlight_symbol(">")
        .highlight_spacing(HighlightSpacing::Always)
        .column_spacing(1)
        .block(block(title));
    let mut state = TableState::default().with_selected(Some(app.disk_cursor));
    f.render_stateful_widget(table, list, &mut state);

    let Some(d) = app.disks.get(app.disk_cursor) else {
        f.render_widget(
            Paragraph::new(if app.busy.is_some() {
                ""
            } else {
                "No disks found. Plug one in and press r."
            })
            .block(block("Partitions")),
            detail,
        );
        return;
    };
    render_disk_detail(app, d, f, detail);
}

fn render_disk_detail(app: &App, d: &DiskInfo, f: &mut Frame, area: Rect) {
    let b = block(&format!(
        "{} - {}, {}",
        d.name,
        human_bytes(d.size),
        table_words(&d.table)
    ));
    let inner = b.inner(area);
    f.render_widget(b, area);
    let why = match app.flow {
        Flow::Save => d.not_a_source(),
        _ => d.not_a_target(),
    };
    let mut extra: Vec<Line> = Vec::new();
    if let Some(w) = why {
        extra.push(Line::styled(format!("Cannot be chosen: {w}"), DANGER));
    } else if app.flow == Flow::Save {
        if let Some(u) = &d.in_use {
            extra.push(Line::styled(
                format!("Warning: {u} (its image may be inconsistent if it changes)"),
                WARN,
            ));
        }
    } else if !d.exists {
        extra.push(Line::styled(
            "Does not exist yet: the restore creates it at the image's size.",
            WARN,
        ));
    }
    if let Some(e) = &d.error {
        if app.flow != Flow::Save {
            extra.push(Line::styled(format!("Table: {e}"), WARN));
        }
    }
    let extra_h = extra
        .iter()
        .map(|l| (l.width() as u16).div_ceil(inner.width.max(1)).max(1))
        .sum::<u16>()
        .min(inner.height.saturating_sub(3));
    let [bar, table_area, extra_area] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(2),
        Constraint::Length(extra_h),
    ])
    .areas(inner);
    f.render_widget(Paragraph::new(layout_bar(d, bar.width)), bar);
    let header =
        Row::new([" #", "FS", "LABEL", "      SIZE", "      USED", "MOUNTED"]).style(HEADER);
    let rows: Vec<Row> = d
        .partitions
        .iter()
        .enumerate()
        .map(|(i, p)| {
            Row::new(vec![
                Cell::from(Span::styled(
                    format!("{:>2}", p.number),
                    Style::new().fg(SEGMENT_COLOURS[i % SEGMENT_COLOURS.len()]),
                )),
                Cell::from(p.fs.clone()),
                Cell::from(p.label.clone()),
                Cell::from(format!("{:>10}", human_bytes(p.size))),
                Cell::from(format!("{:>10}", human_bytes(p.used))),
                Cell::from(p.mountpoint.clone().unwrap_or_default()),
            ])
        })
        .collect();
    let rows = if rows.is_empty() {
        vec![Row::new(vec![
            Cell::from(""),
            Cell::from(if d.exists {
                "no partitions"
            } else {
                "(new file)"
            }),
        ])]
    } else {
        rows
    };
    let wide = area.width >= 120;
    f.render_widget(
        Table::new(
            rows,
            [
                Constraint::Length(3),
                Constraint::Length(9),
                Constraint::Length(if wide { 30 } else { 18 }),
                Constraint::Length(10),
                Constraint::Length(10),
                Constraint::Min(8),
            ],
        )
        .header(header),
        table_area,
    );
    f.render_widget(Paragraph::new(extra).wrap(Wrap { trim: true }), extra_area);
}

fn table_words(t: &str) -> String {
    match t {
        "" => "table not read".into(),
        "none" => "no partition table".into(),
        t => format!("{} partition table", t.to_uppercase()),
    }
}

/// One line showing the disk's layout: every partition as a coloured segment proportional to
/// its size (at least one column), unpartitioned space as `░`.
pub fn layout_bar(d: &DiskInfo, width: u16) -> Line<'static> {
    let width = usize::from(width);
    if width == 0 {
        return Line::from("");
    }
    if d.partitions.is_empty() || d.size == 0 {
        return Line::styled("░".repeat(width), DIM);
    }
    // Segments: (partition index or None for free space, bytes).
    let mut segs: Vec<(Option<usize>, u64)> = Vec::new();
    let mut parts: Vec<(usize, &crate::tui::data::PartInfo)> =
        d.partitions.iter().enumerate().collect();
    parts.sort_by_key(|(_, p)| p.start);
    let mut pos = 0u64;
    for (i, p) in parts {
        if p.start > pos {
            segs.push((None, p.start - pos));
        }
        segs.push((Some(i), p.size));
        pos = pos.max(p.start.saturating_add(p.size));
    }
    if d.size > pos {
        segs.push((None, d.size - pos));
    }
    let total: u64 = segs.iter().map(|s| s.1).sum::<u64>().max(1);
    let mut cols: Vec<usize> = segs
        .iter()
        .map(|(k, b)| {
            let c = ((*b as f64) * width as f64 / total as f64).round() as usize;
            if k.is_some() {
                c.max(1)
            } else {
                c
            }
        })
        .collect();
    // Make the columns add up to the width, taking from or giving to the largest segment.
    loop {
        let sum: usize = cols.iter().sum();
        if sum == width {
            break;
        }
        let Some(big) = (0..cols.len()).max_by_key(|&i| cols[i]) else {
            break;
        };
        if sum > width {
            if cols[big] <= 1 {
                break;
            }
            cols[big] -= 1;
        } else {
            cols[big] += 1;
        }
    }
    let mut spans = Vec::new();
    let mut used = 0;
    for ((k, _), c) in segs.iter().zip(cols) {
        let c = c.min(width - used);
        if c == 0 {
            continue;
        }
        used += c;
        match k {
            None => spans.push(Span::styled("░".repeat(c), DIM)),
            Some(i) => {
                let p = &d.partitions[*i];
                let full = format!("{} {} {}", p.number, p.fs, p.label);
                // A blank column ends each segment wide enough to spare one, so that the
                // segments stay apart without colours too.
                let room = if c >= 3 { c - 1 } else { c };
                let mut text: String = full.trim_end().chars().take(room).collect();
                if text.chars().count() < c {
                    text.push_str(&" ".repeat(c - text.chars().count()));
                }
                spans.push(Span::styled(
                    text,
                    Style::new()
                        .fg(Color::Black)
                        .bg(SEGMENT_COLOURS[i % SEGMENT_COLOURS.len()]),
                ));
            }
        }
    }
    Line::from(spans)
}

fn input_line<'a>(label: &'a str, value: &str, focused: bool) -> Line<'a> {
    let shown = format!(" {value}{} ", if focused { "_" } else { "" });
    Line::from(vec![
        Span::styled(label, HEADER),
        Span::styled(
            shown,
            if focused {
                SELECTED
            } else {
                Style::new().add_modifier(Modifier::UNDERLINED)
            },
        ),
    ])
}

fn render_repo(app: &App, f: &mut Frame, area: Rect) {
    let mut lines = vec![
        Line::from("Where are the images kept? Type the path of a mounted directory."),
        Line::from(""),
        input_line("Directory: ", &app.repo_input, true),
        Line::from(""),
    ];
    if let Some(e) = &app.repo_error {
        lines.push(Line::styled(format!("Cannot use it: {e}"), DANGER));
    } else if let Some(r) = app.current_repo() {
        let complete = r.images.iter().filter(|i| i.complete).count();
        lines.push(Line::from(vec![
            Span::styled("Free space: ", HEADER),
            Span::raw(format!(
                "{} of {}",
                human_bytes(r.free),
                human_bytes(r.total)
            )),
        ]));
        lines.push(Line::from(vec![
            Span::styled("Images:     ", HEADER),
            Span::raw(format!(
                "{} ({} complete, {} incomplete)",
                r.images.len(),
                complete,
                r.images.len() - complete
            )),
        ]));
        if let Some(src) = &app.source {
            lines.push(Line::from(vec![
                Span::styled("To save:    ", HEADER),
                Span::raw(format!(
                    "up to {} from {} (before compression)",
                    human_bytes(src.used()),
                    src.path.display()
                )),
            ]));
        }
        if let Some(c) = &r.conflict {
            lines.push(Line::styled(format!("Cannot use it: {c}"), DANGER));
        }
        if let Some(w) = app.space_warning() {
            lines.push(Line::styled(format!("Warning: {w}"), WARN));
            lines.push(Line::from("Press Enter to use it anyway."));
        }
    } else if !app.repo_input.is_empty() {
        lines.push(Line::styled("Press Enter to read it.", DIM));
    }
    lines.push(Line::from(""));
    lines.push(Line::styled(
        "Mounting a partition or a network share from here is not available yet: mount it \
         from the Shell (e.g. mount /dev/sdc1 /mnt) and type its path.",
        DIM,
    ));
    f.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(block("Image repository")),
        area,
    );
}

fn short_date(created: &str) -> String {
    // 2026-11-22T17:44:09Z -> 2026-11-22 17:44
    let s: String = created.chars().take(16).collect();
    s.replace('T', " ")
}

fn render_images(app: &App, f: &mut Frame, area: Rect) {
    let images: &[ImageEntry] = app
        .current_repo()
        .map(|r| r.images.as_slice())
        .unwrap_or(&[]);
    let rows_h = (images.len() as u16 + 3)
        .min(area.height.saturating_sub(6))
        .max(4);
    let [list, detail] =
        Layout::vertical([Constraint::Length(rows_h), Constraint::Min(5)]).areas(area);
    let wide = area.width >= 120;
    let name_w = if wide { 36 } else { 22 };
    let src_w = if wide { 40 } else { 16 };
    let rows: Vec<Row> = images
        .iter()
        .map(|i| {
            let status = if i.complete {
                Span::styled("complete", GOOD)
            } else {
                Span::styled("INCOMPLETE", DANGER)
            };
            let row = Row::new(vec![
                Cell::from(keep_end(&i.name, usize::from(name_w))),
                Cell::from(short_date(&i.created)),
                Cell::from(keep_end(&i.source, usize::from(src_w))),
                Cell::from(format!("{:>10}", human_bytes(i.size))),
                Cell::from(status),
            ]);
            if i.complete {
                row
            } else {
                row.style(DIM)
            }
        })
        .collect();
    let title = format!(
        "Choose the image to {} - in {}",
        if app.flow == Flow::Restore {
            "restore"
        } else {
            "verify"
        },
        keep_end(&app.repo_input, usize::from(area.width.saturating_sub(40)))
    );
    let table = Table::new(
        rows,
        [
            Constraint::Length(name_w),
            Constraint::Length(16),
            Constraint::Length(src_w),
            Constraint::Length(10),
            Constraint::Min(10),
        ],
    )
    .header(Row::new(["IMAGE", "DATE (UTC)", "SOURCE", "      SIZE", "STATUS"]).style(HEADER))
    .row_highlight_style(SELECTED)
    .highlight_symbol(">")
    .highlight_spacing(HighlightSpacing::Always)
    .block(block(&title));
    let mut state = TableState::default().with_selected(Some(app.image_cursor));
    f.render_stateful_widget(table, list, &mut state);

    let Some(i) = images.get(app.image_cursor) else {
        f.render_widget(
            Paragraph::new("No images here. Esc goes back to choose another directory.")
                .block(block("Image")),
            detail,
        );
        return;
    };
    let mut lines = Vec::new();
    if let Some(p) = &i.problem {
        lines.push(Line::styled(
            format!("{p}; it cannot be restored or verified."),
            DANGER,
        ));
    } else {
        lines.push(Line::from(format!(
            "Saved {} from {} ({}, {} table)",
            i.created,
            i.source,
            human_bytes(i.source_size),
            i.table
        )));
        for p in &i.partitions {
            lines.push(Line::from(format!(
                "  partition {:>2}: {:<7} {:<16} {:>10}, {:>10} stored",
                p.number,
                p.fs,
                p.label,
                human_bytes(p.size),
                human_bytes(p.stored)
            )));
        }
    }
    f.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(block(&i.name)),
        detail,
    );
}

fn render_options(app: &App, f: &mut Frame, area: Rect) {
    let fields = app.fields();
    let focus = fields.get(app.options.focus).copied();
    let o = &app.options;
    let mut lines = Vec::new();
    let label_w = 12;
    let pad = |s: &str| format!("{s:<label_w$}");
    for (idx, field) in fields.iter().enumerate() {
        let focused = focus == Some(*field);
        match field {
            Field::Name => {
                lines.push(Line::from(vec![
                    Span::styled(pad("Image name"), HEADER),
                    Span::styled(
                        format!(" {}{} ", o.name, if focused { "_" } else { "" }),
                        if focused {
                            SELECTED
                        } else {
                            Style::new().add_modifier(Modifier::UNDERLINED)
                        },
                    ),
                ]));
                if let Some(r) = app.current_repo() {
                    lines.push(Line::styled(
                        format!(
                            "{}  in {}",
                            " ".repeat(label_w),
                            keep_end(
                                &r.path.display().to_string(),
                                usize::from(area.width.saturating_sub(24))
                            )
                        ),
                        DIM,
                    ));
                }
            }
            Field::Part(i) => {
                let Some(p) = o.parts.get(*i) else { continue };
                let first = !matches!(fields.get(idx.wrapping_sub(1)), Some(Field::Part(_)));
                let label = if first { pad("Partitions") } else { pad("") };
                lines.push(Line::from(vec![
                    Span::styled(label, HEADER),
                    Span::styled(
                        format!(
                            " [{}] {:>2} {} ",
                            if p.chosen { "x" } else { " " },
                            p.number,
                            p.about
                        ),
                        if focused { SELECTED } else { Style::new() },
                    ),
                ]));
            }
            Field::Split => {
                let parsed = crate::cli::parse_size(&o.split)
                    .map(|n| format!("volumes of at most {}", human_bytes(n)))
                    .unwrap_or_else(|e| e);
                lines.push(Line::from(vec![
                    Span::styled(pad("Split size"), HEADER),
                    Span::styled(
                        format!(" {}{} ", o.split, if focused { "_" } else { "" }),
                        if focused {
                            SELECTED
                        } else {
                            Style::new().add_modifier(Modifier::UNDERLINED)
                        },
                    ),
                    Span::styled(format!("  {parsed}"), DIM),
                ]));
            }
            Field::Verify => {
                lines.push(Line::from(vec![
                    Span::styled(pad("Verify"), HEADER),
                    Span::styled(
                        format!(
                            " [{}] read the image back after saving ",
                            if o.verify { "x" } else { " " }
                        ),
                        if focused { SELECTED } else { Style::new() },
                    ),
                ]));
            }
        }
    }
    if app.flow == Flow::Save && o.parts.is_empty() {
        lines.insert(
            2.min(lines.len()),
            Line::from(vec![
                Span::styled(pad("Partitions"), HEADER),
                Span::raw(" none: the whole disk is one filesystem or raw data"),
            ]),
        );
    }
    if app.flow == Flow::Restore {
        lines.push(Line::from(vec![
            Span::styled(pad("Fit"), HEADER),
            Span::raw(" same layout"),
            Span::styled(" (resizing partitions is not available yet)", DIM),
        ]));
        lines.push(Line::from(vec![
            Span::styled(pad("New IDs"), HEADER),
            Span::raw(" no, keep the disk's and partitions' IDs"),
            Span::styled(" (not available yet)", DIM),
        ]));
        if let (Some(t), Some(i)) = (&app.target, &app.image) {
            lines.push(Line::from(""));
            lines.push(Line::from(format!(
                "Image {} ({} from {}) onto {} ({})",
                i.name,
                human_bytes(i.source_size),
                i.source,
                t.path.display(),
                if t.exists {
                    human_bytes(t.size)
                } else {
                    "new file".into()
                }
            )));
        }
    }
    if app.flow == Flow::Save {
        lines.push(Line::from(""));
        if let Some(w) = app.space_warning() {
            lines.push(Line::styled(format!("Warning: {w}"), WARN));
        }
        lines.push(Line::styled(
            "The default split size fits FAT32 sticks (files below 4 GiB).",
            DIM,
        ));
    }
    f.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(block("Options")),
        area,
    );
}

fn render_summary(app: &App, f: &mut Frame, area: Rect) {
    let mut lines: Vec<Line> = app
        .summary
        .iter()
        .map(|l| {
            if l.danger {
                Line::styled(l.text.clone(), DANGER)
            } else {
                Line::from(l.text.clone())
            }
        })
        .collect();
    lines.push(Line::from(""));
    lines.push(Line::styled(
        match app.flow {
            Flow::Save => "Press Enter to start the save, Esc to change something.",
            Flow::Restore => "Press Enter to confirm by typing the target's name, Esc to go back.",
            Flow::Verify => "Press Enter to start the verification, Esc to go back.",
        },
        HEADER,
    ));
    f.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(block("Plan: this is what will happen")),
        area,
    );
}

fn render_confirm(app: &App, f: &mut Frame, area: Rect) {
    let Some(t) = &app.target else { return };
    let mut lines = vec![
        Line::styled(
            if t.exists {
                format!(
                    "Everything on {} ({}{}) will be overwritten.",
                    t.path.display(),
                    if t.model.is_empty() {
                        String::new()
                    } else {
                        format!("{}, ", t.model)
                    },
                    human_bytes(t.size)
                )
            } else {
                format!("{} will be created.", t.path.display())
            },
            DANGER,
        ),
        Line::from(""),
        Line::from(format!(
            "To go on, type {} and press Enter. Esc goes back.",
            t.name
        )),
        Line::from(""),
        input_line("Name: ", &app.confirm_input, true),
    ];
    if !app.confirm_input.is_empty() && !t.name.starts_with(app.confirm_input.as_str()) {
        lines.push(Line::styled(format!("This is not {}.", t.name), WARN));
    }
    f.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(block("Confirm").border_style(DANGER)),
        area,
    );
}

/// A gauge in characters the Linux console has: `█████░░░░░  45%`.
pub fn gauge(done: u64, total: u64, width: u16) -> Line<'static> {
    let ratio = if total == 0 {
        0.0
    } else {
        (done as f64 / total as f64).clamp(0.0, 1.0)
    };
    let pct = format!(" {:>3}%", (ratio * 100.0).floor() as u64);
    let bar_w = usize::from(width).saturating_sub(pct.len());
    let fill = ((bar_w as f64) * ratio).round() as usize;
    Line::from(vec![
        Span::styled("█".repeat(fill), Style::new().fg(Color::Green)),
        Span::styled("░".repeat(bar_w - fill), DIM),
        Span::raw(pct),
    ])
}

/// `text` broken into lines of at most `width` characters, at spaces where possible.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut out = Vec::new();
    for para in text.split('\n') {
        let mut line = String::new();
        for word in para.split(' ') {
            let wl = word.chars().count();
            let ll = line.chars().count();
            if ll > 0 && ll + 1 + wl > width {
                out.push(std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
            while line.chars().count() > width {
                let head: String = line.chars().take(width).collect();
                line = line.chars().skip(width).collect();
                out.push(head);
            }
        }
        out.push(line);
    }
    out
}

fn op_title(app: &App, p: &ProgressState) -> String {
    let what = match p.op.as_str() {
        "save" => "Saving",
        "restore" => "Restoring",
        "verify" => "Verifying",
        _ => "Starting",
    };
    let subject = match app.flow {
        Flow::Save => app
            .source
            .as_ref()
            .map(|d| d.path.display().to_string())
            .unwrap_or_default(),
        Flow::Restore => app
            .target
            .as_ref()
            .map(|d| format!("onto {}", d.path.display()))
            .unwrap_or_default(),
        Flow::Verify => app
            .image
            .as_ref()
            .map(|i| i.name.clone())
            .unwrap_or_default(),
    };
    format!("{what} {subject}")
}

fn render_progress(app: &App, f: &mut Frame, area: Rect) {
    let p = &app.progress;
    let b = block(&op_title(app, p));
    let inner = b.inner(area);
    f.render_widget(b, area);
    let [step_l, step_g, all_l, all_g, stats, _, log_area] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(1),
    ])
    .areas(inner);
    let lab = |s: &str| Span::styled(format!("{s:<9}"), HEADER);
    f.render_widget(
        Paragraph::new(Line::from(vec![
            lab("Step"),
            Span::raw(if p.step.is_empty() {
                "preparing...".to_string()
            } else {
                p.step.clone()
            }),
        ])),
        step_l,
    );
    // Room for the label and "  123.4 MiB of 123.4 MiB".
    let gw = step_g.width.saturating_sub(9 + 24).min(60);
    let gauge_row = |done: u64, total: u64| {
        let mut spans = vec![Span::raw(" ".repeat(9))];
        spans.extend(gauge(done, total, gw).spans);
        spans.push(Span::raw(format!(
            "  {} of {}",
            human_bytes(done),
            human_bytes(total)
        )));
        Line::from(spans)
    };
    f.render_widget(Paragraph::new(gauge_row(p.step_done, p.step_total)), step_g);
    let phase = match (app.flow, p.op.as_str()) {
        (Flow::Save, "save") if app.options.verify => "save (verification follows)",
        (_, "") => "",
        (_, op) => op,
    };
    f.render_widget(
        Paragraph::new(Line::from(vec![
            lab("Overall"),
            Span::raw(phase.to_string()),
        ])),
        all_l,
    );
    f.render_widget(Paragraph::new(gauge_row(p.done, p.total)), all_g);
    let eta = p.eta().map(hms).unwrap_or_else(|| "-".into());
    f.render_widget(
        Paragraph::new(Line::from(vec![
            lab("Speed"),
            Span::raw(format!(
                "{:<14}",
                if p.rate() > 0.0 {
                    format!("{}/s", human_bytes(p.rate() as u64))
                } else {
                    "-".into()
                }
            )),
            Span::styled("Elapsed ", HEADER),
            Span::raw(format!("{:<10}", hms(p.elapsed()))),
            Span::styled("Left ", HEADER),
            Span::raw(eta),
            Span::styled(if p.cancelling { "   stopping..." } else { "" }, WARN),
        ])),
        stats,
    );
    render_log(p, f, log_area);
}

fn render_log(p: &ProgressState, f: &mut Frame, area: Rect) {
    let b = Block::new()
        .borders(Borders::TOP)
        .title(Span::styled(" Log ", HEADER));
    let inner = b.inner(area);
    f.render_widget(b, area);
    let w = usize::from(inner.width.max(1));
    let mut lines: Vec<Line> = Vec::new();
    for l in &p.log {
        let (prefix, style) = match l.kind {
            LogKind::Step => ("", Style::new()),
            LogKind::Note => ("", DIM),
            LogKind::Warning => ("warning: ", WARN),
            LogKind::Error => ("error: ", DANGER),
        };
        for s in wrap(&format!("{prefix}{}", l.text), w) {
            lines.push(Line::styled(s, style));
        }
    }
    let h = usize::from(inner.height);
    let skip = lines.len().saturating_sub(h);
    f.render_widget(Paragraph::new(lines.split_off(skip)), inner);
}

fn render_result(app: &App, f: &mut Frame, area: Rect) {
    let Some(o) = &app.outcome else { return };
    let lab = |s: &str| Span::styled(format!("{s:<13}"), HEADER);
    let mut lines: Vec<Line> = Vec::new();
    let (title, style) = match o {
        Outcome::Saved {
            source,
            image,
            read,
            written,
            secs,
            verified,
        } => {
            lines.push(Line::styled(
                format!("Saved {} into {}", source.display(), image.display()),
                GOOD,
            ));
            lines.push(Line::from(""));
            lines.push(Line::from(vec![lab("Time"), Span::raw(hms(*secs))]));
            lines.push(Line::from(vec![
                lab("Data read"),
                Span::raw(format!("{} (the used blocks)", human_bytes(*read))),
            ]));
            lines.push(Line::from(vec![
                lab("Image size"),
                Span::raw(format!(
                    "{} ({:.1}x smaller)",
                    human_bytes(*written),
                    *read as f64 / (*written).max(1) as f64
                )),
            ]));
            lines.push(Line::from(vec![
                lab("Throughput"),
                Span::raw(rate(*read, *secs)),
            ]));
            lines.push(Line::from(vec![
                lab("Verification"),
                match verified {
                    Some((blocks, bytes)) => Span::styled(
                        format!(
                            "passed: {blocks} blocks, {} read back and checked",
                            human_bytes(*bytes)
                        ),
                        GOOD,
                    ),
                    None => Span::styled("not done (turned off in the options)", WARN),
                },
            ]));
            ("Done", GOOD)
        }
        Outcome::Restored {
            image,
            target,
            written,
            secs,
        } => {
            lines.push(Line::styled(
                format!("Restored {} onto {}", image.display(), target.display()),
                GOOD,
            ));
            lines.push(Line::from(""));
            lines.push(Line::from(vec![lab("Time"), Span::raw(hms(*secs))]));
            lines.push(Line::from(vec![
                lab("Written"),
                Span::raw(human_bytes(*written)),
            ]));
            lines.push(Line::from(vec![
                lab("Throughput"),
                Span::raw(rate(*written, *secs)),
            ]));
            lines.push(Line::from(vec![
                lab("Checks"),
                Span::raw("every block's checksum matched as it was written"),
            ]));
            ("Done", GOOD)
        }
        Outcome::Verified {
            image,
            blocks,
            bytes,
            volumes,
            secs,
        } => {
            lines.push(Line::styled(format!("{} is sound", image.display()), GOOD));
            lines.push(Line::from(""));
            lines.push(Line::from(vec![lab("Time"), Span::raw(hms(*secs))]));
            lines.push(Line::from(vec![
                lab("Checked"),
                Span::raw(format!(
                    "{blocks} blocks, {} in {volumes} volumes",
                    human_bytes(*bytes)
                )),
            ]));
            lines.push(Line::from(vec![
                lab("Throughput"),
                Span::raw(rate(*bytes, *secs)),
            ]));
            ("Done", GOOD)
        }
        Outcome::Failed {
            op,
            error,
            interrupted,
            damaged,
            secs,
        } => {
            lines.push(Line::styled(
                if *interrupted {
                    format!("The {} was stopped.", op.noun())
                } else {
                    format!("The {} failed.", op.noun())
                },
                DANGER,
            ));
            lines.push(Line::from(""));
            if !*interrupted {
                for l in wrap(error, usize::from(area.width.saturating_sub(4))) {
                    lines.push(Line::from(l));
                }
                lines.push(Line::from(""));
            }
            lines.push(Line::from(match op {
                Flow::Save => "The partial image was removed; no disk was changed.",
                Flow::Restore if app.progress.op.is_empty() => "Nothing was written to the target.",
                Flow::Restore => {
                    "The target may hold a partial restore: restore an image onto it before \
                     using it."
                }
                Flow::Verify if *damaged => {
                    "The image is damaged or incomplete: do not rely on it."
                }
                Flow::Verify => "Nothing was changed.",
            }));
            lines.push(Line::from(vec![lab("Time"), Span::raw(hms(*secs))]));
            (if *interrupted { "Stopped" } else { "Failed" }, DANGER)
        }
    };
    let warnings = app
        .progress
        .log
        .iter()
        .filter(|l| l.kind == LogKind::Warning)
        .count();
    if warnings > 0 {
        lines.push(Line::from(vec![
            lab("Warnings"),
            Span::styled(format!("{warnings} (see the log)"), WARN),
        ]));
    }
    if let Some(p) = &app.log_path {
        lines.push(Line::from(vec![
            lab("Log"),
            Span::raw(p.display().to_string()),
        ]));
    }
    f.render_widget(
        Paragraph::new(Text::from(lines))
            .wrap(Wrap { trim: false })
            .block(block(title).border_style(style)),
        area,
    );
}
