//! Image verbs: import, images, tag, rmi, image inspect|ls|rm|prune.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::Ctx;
use super::output::{print_json, print_table};
use crate::disk::filter::{self, Key};
use crate::image::{self, Removed, import::ImportOptions, short};
use crate::reference::Reference;
use crate::util::{ago, human_size, rfc3339};

#[derive(Debug, Subcommand)]
pub enum Commands {
    /// Import a rootfs tarball (plain, gzip or zstd; - for stdin) as an image
    Import(ImportArgs),
    /// Load images from a docker-archive, oci-archive or OCI layout directory
    Load(LoadArgs),
    /// Pull an image from a registry
    Pull(PullArgs),
    /// Save images to a docker-archive (or --format oci-archive)
    Save(SaveArgs),
    /// Push an image to a registry (only the blobs it lacks are sent)
    Push(PushArgs),
    /// Make an image of a container: its write layer becomes a new top layer
    Commit(CommitArgs),
    /// Log in to a registry (credentials kept in ~/.config/wharf/auth.json, mode 0600)
    Login(LoginArgs),
    /// Log out of a registry
    Logout(LogoutArgs),
    /// List images
    Images(ImagesArgs),
    /// Give an image another name:tag
    Tag(TagArgs),
    /// Remove image tags, and images no tag or container holds
    Rmi(RmiArgs),
    /// Manage images
    #[command(subcommand)]
    Image(ImageCmd),
}

#[derive(Debug, Subcommand)]
pub enum ImageCmd {
    /// Show an image's config, layers and size as JSON
    Inspect(InspectArgs),
    /// List images
    #[command(alias = "list")]
    Ls(ImagesArgs),
    /// Remove images
    Rm(RmiArgs),
    /// Import a tarball as an image
    Import(ImportArgs),
    /// Load images from an archive
    Load(LoadArgs),
    /// Pull an image from a registry
    Pull(PullArgs),
    /// Save images to an archive
    Save(SaveArgs),
    /// Push an image to a registry
    Push(PushArgs),
    /// Remove dangling images no container uses (-a: every unused image)
    Prune(ImagePruneArgs),
}

#[derive(Debug, Args)]
pub struct ImagePruneArgs {
    /// Remove every image no container uses, not only untagged ones
    #[arg(short, long)]
    pub all: bool,
    #[command(flatten)]
    pub common: super::system::PruneArgs,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The tarball: a path, or - for standard input
    pub file: PathBuf,
    /// The name to give the image, e.g. app:1.0
    pub reference: Option<String>,
    /// Set image config with a Dockerfile instruction: CMD, ENTRYPOINT, ENV, WORKDIR, USER,
    /// LABEL, EXPOSE, VOLUME, STOPSIGNAL
    #[arg(short = 'c', long = "change", value_name = "INSTRUCTION")]
    pub changes: Vec<String>,
    /// A comment for the image's history
    #[arg(short = 'm', long = "message")]
    pub message: Option<String>,
    /// Print only the image id, with no progress bar
    #[arg(short, long)]
    pub quiet: bool,
    /// Refuse an archive whose files hold more than SIZE (real size: a sparse file counts
    /// whole), e.g. 10GiB [default: `[import] max_size` of <root>/config.toml, else 64GiB]
    #[arg(long, value_name = "SIZE", value_parser = size_arg)]
    pub max_size: Option<u64>,
}

fn size_arg(s: &str) -> Result<u64, String> {
    crate::manifest::values::parse_size(s).map_err(|e| match e.hint {
        Some(h) => format!("{} ({h})", e.message),
        None => e.message,
    })
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// The archive (docker-archive or oci-archive; plain, gzip or zstd) or an OCI layout
    /// directory; - or nothing for standard input
    #[arg(short, long, default_value = "-")]
    pub input: PathBuf,
    /// The image of a multi-platform index to load: os/arch[/variant] (default: the host's)
    #[arg(long)]
    pub platform: Option<String>,
    /// Print only the image ids, with no progress bars
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// The image: [host[:port]/]name[:tag] or name@sha256:<digest> (alpine means
    /// docker.io/library/alpine:latest)
    pub reference: String,
    /// The image of a multi-platform index: os/arch[/variant] (default: the host's)
    #[arg(long)]
    pub platform: Option<String>,
    /// With false, talk plain HTTP to the registry (loopback registries always are)
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub tls_verify: bool,
    /// Print only the image id, with no progress bars
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct SaveArgs {
    /// The images: name[:tag], name@sha256:…, id or id prefix
    #[arg(required = true)]
    pub images: Vec<String>,
    /// The file to write (standard output when left out and it is not a terminal)
    #[arg(short, long)]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CommitArgs {
    /// The container: name, id or id prefix
    pub container: String,
    /// The name to give the image, e.g. app:1.1
    pub reference: Option<String>,
    /// Set image config with a Dockerfile instruction, as for import
    #[arg(short = 'c', long = "change", value_name = "INSTRUCTION")]
    pub changes: Vec<String>,
    /// A comment for the image's history
    #[arg(short = 'm', long = "message")]
    pub message: Option<String>,
    /// The author
    #[arg(short = 'a', long = "author")]
    pub author: Option<String>,
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// The image: name[:tag], id or id prefix
    pub source: String,
    /// Where to: [host[:port]/]name[:tag] (default: the source's name)
    pub destination: Option<String>,
    /// With false, talk plain HTTP to the registry (loopback registries always are)
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub tls_verify: bool,
    /// Print only the manifest digest
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The registry: host[:port] (default docker.io)
    pub server: Option<String>,
    /// The user name
    #[arg(short, long)]
    pub username: String,
    /// The password (prefer --password-stdin: a command line is visible to others)
    #[arg(short, long, conflicts_with = "password_stdin")]
    pub password: Option<String>,
    /// Read the password from standard input
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// The registry: host[:port] (default docker.io)
    pub server: Option<String>,
}

#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Show only images of this repository (name or name:tag)
    pub repository: Option<String>,
    /// Print only image ids
    #[arg(short, long)]
    pub quiet: bool,
    /// Do not shorten ids
    #[arg(long)]
    pub no_trunc: bool,
    /// Filter: dangling=true|false, reference=REPO[:TAG], until=TIME (repeatable)
    #[arg(short, long = "filter", value_name = "KEY=VALUE")]
    pub filter: Vec<String>,
    /// Show the manifest digests images were pulled or loaded by
    #[arg(long)]
    pub digests: bool,
}

#[derive(Debug, Args)]
pub struct TagArgs {
    /// The image: name[:tag], id or id prefix
    pub source: String,
    /// The new name[:tag]
    pub target: String,
}

#[derive(Debug, Args)]
pub struct RmiArgs {
    /// Images: name[:tag], id or id prefix
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Remove every tag of an image named by id, and tags of images containers use
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Images: name[:tag], id or id prefix
    #[arg(required = true)]
    pub images: Vec<String>,
}

pub fn run(ctx: &Ctx, cmd: Commands) -> Result<i32> {
    match cmd {
        Commands::Import(a) | Commands::Image(ImageCmd::Import(a)) => import(ctx, a),
        Commands::Load(a) | Commands::Image(ImageCmd::Load(a)) => load(ctx, a),
        Commands::Pull(a) | Commands::Image(ImageCmd::Pull(a)) => pull(ctx, a),
        Commands::Save(a) | Commands::Image(ImageCmd::Save(a)) => save(ctx, a),
        Commands::Push(a) | Commands::Image(ImageCmd::Push(a)) => {
            let store = ctx.store()?;
            let p = image::push::push(&store, &a.source, a.destination.as_deref(), a.tls_verify)?;
            if ctx.json() {
                print_json(&serde_json::json!({
                    "Reference": p.reference, "Digest": p.digest,
                    "Layers": p.layers.iter().map(|(d, sent)| serde_json::json!({
                        "Digest": d,
                        "Pushed": *sent == image::push::Sent::Pushed,
                        "MountedFrom": match sent { image::push::Sent::Mounted(r) => Some(r), _ => None },
                    })).collect::<Vec<_>>(),
                }))?;
            } else if a.quiet {
                println!("{}", p.digest);
            } else {
                for (d, sent) in &p.layers {
                    let hex = d.strip_prefix("sha256:").unwrap_or(d);
                    match sent {
                        image::push::Sent::Pushed => println!("{}: Pushed", short(hex)),
                        image::push::Sent::Exists => {
                            println!("{}: Layer already exists", short(hex))
                        }
                        image::push::Sent::Mounted(r) => {
                            println!("{}: Mounted from {r}", short(hex))
                        }
                    }
                }
                println!("{}: digest: {}", p.reference, p.digest);
            }
            Ok(0)
        }
        Commands::Commit(a) => {
            let store = ctx.store()?;
            let id = image::commit::commit(
                &store,
                &a.container,
                a.reference.as_deref(),
                &image::commit::CommitOptions {
                    changes: a.changes,
                    message: a.message,
                    author: a.author,
                },
            )?;
            println!("sha256:{id}");
            Ok(0)
        }
        Commands::Login(a) => login(a),
        Commands::Logout(a) => {
            let host = a.server.as_deref().unwrap_or("docker.io");
            if image::auth::logout(host)? {
                println!("Removing login credentials for {host}");
            } else {
                println!("Not logged in to {host}");
            }
            Ok(0)
        }
        Commands::Images(a) | Commands::Image(ImageCmd::Ls(a)) => images(ctx, a),
        Commands::Tag(a) => {
            let store = ctx.store()?;
            image::tag(&store, &a.source, &a.target)?;
            Ok(0)
        }
        Commands::Rmi(a) | Commands::Image(ImageCmd::Rm(a)) => rmi(ctx, a),
        Commands::Image(ImageCmd::Prune(a)) => super::system::prune(
            ctx,
            &crate::disk::prune::Scope {
                containers: false,
                images: Some(if a.all {
                    crate::disk::prune::ImageScope::All
                } else {
                    crate::disk::prune::ImageScope::Dangling
                }),
                volumes: None,
            },
            &a.common,
        ),
        Commands::Image(ImageCmd::Inspect(a)) => {
            let store = ctx.store()?;
            let all = a
                .images
                .iter()
                .map(|i| image::inspect(&store, i))
                .collect::<Result<Vec<_>>>()?;
            print_json(&all)?;
            Ok(0)
        }
    }
}

fn import(ctx: &Ctx, a: ImportArgs) -> Result<i32> {
    let tag = a
        .reference
        .as_deref()
        .map(Reference::parse_named)
        .transpose()?;
    if let Some(r @ Reference::Digest { .. }) = &tag {
        return Err(
            crate::error::user(format!("cannot import as {r}: a digest is not a tag"))
                .hint("name the image name:tag, e.g. app:1.0")
                .into(),
        );
    }
    let store = ctx.store()?;
    let progress = (!a.quiet && std::io::stderr().is_terminal()).then(|| {
        let pb = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        pb.set_style(
            ProgressStyle::with_template(
                "{spinner} importing {bytes}/{total_bytes} {wide_bar} {binary_bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        pb
    });
    let imported = image::import::import_path(
        &store,
        &a.file,
        ImportOptions {
            changes: a.changes,
            message: a.message,
            tag,
            progress,
            max_size: a.max_size,
        },
    )?;
    if ctx.json() {
        print_json(&serde_json::json!({
            "Id": format!("sha256:{}", imported.id),
            "DiffId": format!("sha256:{}", imported.diff_id),
            "SourceDigest": format!("sha256:{}", imported.source_digest),
            "Compression": imported.compression.name(),
            "LayerReused": imported.layer_reused,
            "Entries": imported.stats.entries,
            "Size": imported.stats.bytes,
        }))?;
    } else {
        println!("sha256:{}", imported.id);
    }
    Ok(0)
}

/// One progress bar per layer on a terminal, none when piped or quiet.
pub(super) fn layer_bars(quiet: bool) -> Option<indicatif::MultiProgress> {
    (!quiet && std::io::stderr().is_terminal())
        .then(|| indicatif::MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
}

fn pull(ctx: &Ctx, a: PullArgs) -> Result<i32> {
    let platform = a
        .platform
        .as_deref()
        .map(image::oci::parse_platform)
        .transpose()?;
    let store = ctx.store()?;
    let pulled = image::pull::pull(
        &store,
        &a.reference,
        &image::pull::PullOptions {
            platform,
            tls_verify: a.tls_verify,
            progress: layer_bars(a.quiet),
            parallel: 3,
        },
    )?;
    let full = match &pulled.tag {
        Some(t) => format!("{}:{t}", pulled.name),
        None => format!("{}@{}", pulled.name, pulled.digest),
    };
    if ctx.json() {
        print_json(&serde_json::json!({
            "Id": format!("sha256:{}", pulled.id), "Reference": full,
            "Digest": pulled.digest, "UpToDate": pulled.up_to_date,
        }))?;
    } else if a.quiet {
        println!("sha256:{}", pulled.id);
    } else {
        println!("Digest: {}", pulled.digest);
        if pulled.up_to_date {
            println!("Status: Image is up to date for {full}");
        } else {
            println!("Status: Downloaded newer image for {full}");
        }
    }
    Ok(0)
}

fn save(ctx: &Ctx, a: SaveArgs) -> Result<i32> {
    // The global --format: docker-archive (the default) or oci-archive.
    let format = match ctx.format {
        super::Format::OciArchive => image::archive::SaveFormat::OciArchive,
        super::Format::Json => {
            return Err(crate::error::user("save writes an archive, not JSON")
                .hint("use --format docker-archive (the default) or --format oci-archive")
                .into());
        }
        _ => image::archive::SaveFormat::DockerArchive,
    };
    let store = ctx.store()?;
    match &a.output {
        Some(path) => {
            // Written beside the target, renamed over it when complete: a failed save
            // leaves no half archive.
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            let mut tmp = tempfile_in(dir, path)?;
            let r = image::archive::save(&store, &a.images, format, &mut tmp.1);
            match r.and_then(|()| Ok(tmp.1.sync_all()?)) {
                Ok(()) => std::fs::rename(&tmp.0, path).map_err(|e| {
                    let _ = std::fs::remove_file(&tmp.0);
                    anyhow::Error::new(crate::error::user(format!(
                        "cannot write {}: {e}",
                        path.display()
                    )))
                })?,
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp.0);
                    return Err(e);
                }
            }
        }
        None => {
            if std::io::stdout().is_terminal() {
                return Err(
                    crate::error::user("refusing to write an archive to a terminal")
                        .hint("give -o FILE, or redirect the output: wharf save IMAGE > app.tar")
                        .into(),
                );
            }
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            image::archive::save(&store, &a.images, format, &mut out)?;
            std::io::Write::flush(&mut out)?;
        }
    }
    Ok(0)
}

/// A new file beside `target` (`.NAME.<pid>.tmp`), opened for writing.
fn tempfile_in(
    dir: &std::path::Path,
    target: &std::path::Path,
) -> Result<(PathBuf, std::fs::File)> {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "archive".into());
    let p = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let f = std::fs::File::create(&p).map_err(|e| {
        anyhow::Error::new(
            crate::error::user(format!("cannot create {}: {e}", p.display()))
                .hint("give -o a path in a writable directory"),
        )
    })?;
    Ok((p, f))
}

fn login(a: LoginArgs) -> Result<i32> {
    let host = a.server.as_deref().unwrap_or("docker.io");
    let password = match (a.password, a.password_stdin) {
        (Some(p), _) => p,
        (None, true) => {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
            s.trim_end_matches(['\n', '\r']).to_string()
        }
        (None, false) => {
            return Err(crate::error::user("no password given")
                .hint("pass it on standard input with --password-stdin (or -p PASSWORD)")
                .into());
        }
    };
    if password.is_empty() {
        return Err(crate::error::user("the password is empty")
            .hint("pass it on standard input with --password-stdin")
            .into());
    }
    let path = image::auth::login(host, &a.username, &password)?;
    eprintln!("credentials saved in {}", path.display());
    println!("Login Succeeded");
    Ok(0)
}

fn load(ctx: &Ctx, a: LoadArgs) -> Result<i32> {
    let platform = match &a.platform {
        Some(p) => image::oci::parse_platform(p)?,
        None => image::oci::host_platform(),
    };
    let store = ctx.store()?;
    let loaded = image::archive::load(
        &store,
        &a.input,
        &image::archive::LoadOptions {
            progress: layer_bars(a.quiet),
            platform,
        },
    )?;
    if ctx.json() {
        let v: Vec<_> = loaded
            .iter()
            .map(|l| serde_json::json!({"Id": format!("sha256:{}", l.id), "RepoTags": l.tags}))
            .collect();
        print_json(&v)?;
    } else {
        for l in &loaded {
            if l.tags.is_empty() || a.quiet {
                println!("Loaded image ID: sha256:{}", l.id);
            } else {
                for t in &l.tags {
                    println!("Loaded image: {t}");
                }
            }
        }
    }
    Ok(0)
}

fn images(ctx: &Ctx, a: ImagesArgs) -> Result<i32> {
    let f = filter::parse(
        &a.filter,
        &[Key::Dangling, Key::Reference, Key::Until],
        crate::store::now_ns(),
    )?;
    let store = ctx.store()?;
    let mut all = image::list(&store)?;
    let refs: Vec<&str> = a.repository.iter().map(String::as_str).collect();
    for r in [refs, f.references.iter().map(String::as_str).collect()] {
        if !r.is_empty() {
            all.retain(|i| r.iter().any(|r| reference_matches(r, &i.tags)));
            for i in &mut all {
                i.tags.retain(|t| {
                    r.iter()
                        .any(|r| reference_matches(r, std::slice::from_ref(t)))
                });
            }
        }
    }
    all.retain(|i| {
        f.dangling.is_none_or(|d| d == i.tags.is_empty()) && f.until.is_none_or(|t| i.created < t)
    });
    let id_of = |id: &str| {
        if a.no_trunc {
            format!("sha256:{id}")
        } else {
            short(id).to_string()
        }
    };
    if a.quiet {
        for i in &all {
            println!("{}", id_of(&i.id));
        }
        return Ok(0);
    }
    let digests = image::repo_digests(&store)?;
    let digest_of = |repo: &str, id: &str| -> String {
        let ds = digests.get(id);
        ds.and_then(|v| v.iter().find(|(r, _)| r == repo).or(v.first()))
            .map_or("<none>".to_string(), |(_, d)| d.clone())
    };
    // One row per tag; an untagged image is one <none> row, as docker shows it.
    let mut rows = Vec::new();
    for i in &all {
        let tags = repo_tags(&i.tags);
        for (repo, tag) in tags {
            rows.push((repo, tag, i));
        }
    }
    if ctx.json() {
        let v: Vec<_> = rows
            .iter()
            .map(|(repo, tag, i)| {
                serde_json::json!({
                    "Repository": repo, "Tag": tag, "ID": format!("sha256:{}", i.id),
                    "Digest": digest_of(repo, &i.id),
                    "CreatedAt": rfc3339(i.created), "CreatedSince": ago(i.created),
                    "Size": i.size, "Containers": i.containers,
                })
            })
            .collect();
        print_json(&v)?;
        return Ok(0);
    }
    if a.digests {
        print_table(
            &["REPOSITORY", "TAG", "DIGEST", "IMAGE ID", "CREATED", "SIZE"],
            rows.into_iter()
                .map(|(repo, tag, i)| {
                    let d = digest_of(&repo, &i.id);
                    vec![
                        repo,
                        tag,
                        d,
                        id_of(&i.id),
                        ago(i.created),
                        human_size(i.size),
                    ]
                })
                .collect(),
        );
        return Ok(0);
    }
    print_table(
        &["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"],
        rows.into_iter()
            .map(|(repo, tag, i)| vec![repo, tag, id_of(&i.id), ago(i.created), human_size(i.size)])
            .collect(),
    );
    Ok(0)
}

fn rmi(ctx: &Ctx, a: RmiArgs) -> Result<i32> {
    let store = ctx.store()?;
    let mut code = 0;
    for input in &a.images {
        match image::remove(&store, input, a.force) {
            Ok(events) => {
                for e in events {
                    match e {
                        Removed::Untagged(t) => println!("Untagged: {t}"),
                        Removed::Deleted(id) => println!("Deleted: sha256:{id}"),
                    }
                }
            }
            Err(e) => {
                eprintln!("{}", crate::error::render(&e));
                code = crate::error::exit_code(&e);
            }
        }
    }
    Ok(code)
}

/// An image's tags as (repository, tag) rows; an untagged image is one `<none>` row, as docker
/// shows it (`wharf images` and `wharf system df -v`).
/// `repo` or `repo:tag` (the `images` argument, `--filter reference=`): whether one of `tags`
/// is in that repository (with that tag).
fn reference_matches(filter: &str, tags: &[String]) -> bool {
    let (repo, tag) = match filter.rsplit_once(':') {
        Some((r, t)) if !t.contains('/') => (r, Some(t)),
        _ => (filter, None),
    };
    tags.iter().any(|t| {
        let (r, tg) = t.rsplit_once(':').unwrap_or((t, ""));
        r == repo && tag.is_none_or(|x| x == tg)
    })
}

pub(super) fn repo_tags(tags: &[String]) -> Vec<(String, String)> {
    if tags.is_empty() {
        return vec![("<none>".into(), "<none>".into())];
    }
    tags.iter()
        .map(|t| {
            let (r, tg) = t.rsplit_once(':').unwrap_or((t, ""));
            (r.to_string(), tg.to_string())
        })
        .collect()
}
