//! `mana_status`: ask the job's coordinator to checkpoint, list, kill or quit.

use clap::{CommandFactory, Parser};
use mana_coordinator::{status, Connection, FromCoord, ProcessRow, Role, ToCoord};
use mana_image::CkptDir;
use std::path::PathBuf;
use std::process::ExitCode;

/// Talk to the job's MANA coordinator. Exactly one action.
///
/// The coordinator is found through the status file: --status-file, else
/// $MANA_STATUS_FILE, else ~/.mana-slurm-$SLURM_JOB_ID.rc inside a Slurm job, else
/// ~/.mana.rc.
#[derive(Parser, Debug)]
#[command(name = "mana_status", version)]
struct Cli {
    /// Status file of the coordinator to talk to.
    #[arg(long, value_name = "FILE")]
    status_file: Option<PathBuf>,

    /// Checkpoint every process; blocks until the generation is committed, then prints
    /// its directory. With --kill, the processes exit after the commit.
    #[arg(long)]
    checkpoint: bool,

    /// List the registered processes.
    #[arg(long)]
    list: bool,

    /// Kill every process (with --checkpoint: after the checkpoint is committed).
    #[arg(long)]
    kill: bool,

    /// Kill every process and stop the coordinator.
    #[arg(long)]
    quit: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    mana_coordinator::init_logging("warn", true);
    let actions = [
        cli.checkpoint,
        cli.list,
        cli.kill && !cli.checkpoint,
        cli.quit,
    ];
    if actions.iter().filter(|&&a| a).count() != 1 {
        Cli::command()
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                "give exactly one of --checkpoint [--kill], --list, --kill, --quit",
            )
            .exit();
    }
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mana_status: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<(), mana_coordinator::ClientError> {
    let path = status::absolute(&cli.status_file.clone().unwrap_or_else(status::default_path));
    let (mut conn, _) = Connection::open(&path, Role::Command)?;
    let request = if cli.checkpoint {
        ToCoord::Checkpoint {
            kill_after: cli.kill,
        }
    } else if cli.list {
        ToCoord::List
    } else if cli.kill {
        ToCoord::Kill
    } else {
        ToCoord::Quit
    };
    // What LATEST says in each process's checkpoint directory before the checkpoint: if
    // the coordinator's connection drops before its answer, a generation committed after
    // these tells the outcome (the commit is LATEST's rename).
    let before = if cli.checkpoint {
        match conn.request(&ToCoord::List)? {
            FromCoord::Rows(rows) => rows
                .into_iter()
                .filter(|r| std::path::Path::new(&r.ckpt_dir).is_absolute())
                .map(|r| {
                    let dir = CkptDir::new(&r.ckpt_dir);
                    let latest = dir.latest().ok().flatten();
                    (dir, latest)
                })
                .collect(),
            _ => Vec::new(),
        }
    } else {
        Vec::new()
    };
    let reply = match conn.request(&request) {
        Ok(r) => r,
        // The connection failed (not a refusal by the coordinator): LATEST tells.
        Err(e @ mana_coordinator::ClientError::Proto { .. }) if cli.checkpoint => {
            let committed = before.iter().find_map(|(dir, old)| {
                let now = dir.latest().ok().flatten()?;
                (Some(now) > *old).then(|| dir.gen_dir(now))
            });
            match committed {
                Some(gen) => {
                    eprintln!("mana_status: the coordinator's connection dropped ({e}), after the checkpoint was committed");
                    println!("{}", gen.display());
                    return Ok(());
                }
                None => return Err(e),
            }
        }
        Err(e) => return Err(e),
    };
    match reply {
        FromCoord::Checkpointed { dir, .. } => println!("{dir}"),
        FromCoord::Rows(rows) => print_table(&rows),
        FromCoord::Done { message } => println!("{message}"),
        other => println!("{other:?}"),
    }
    Ok(())
}

fn print_table(rows: &[ProcessRow]) {
    let header = ["ID", "HOST", "PID", "RANK", "STATE", "LAST-GEN", "PROGRAM"];
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            [
                r.id.to_string(),
                r.host.clone(),
                r.pid.to_string(),
                r.rank.to_string(),
                r.state.clone(),
                if r.last_generation == 0 {
                    "-".into()
                } else {
                    r.last_generation.to_string()
                },
                r.program.clone(),
            ]
        })
        .collect();
    let mut width = header.map(str::len);
    for row in &cells {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cols: [&str; 7]| {
        let mut s = String::new();
        for (i, c) in cols.iter().enumerate() {
            if i + 1 == cols.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = width[i]));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header);
    for row in &cells {
        line(row.each_ref().map(String::as_str));
    }
}
