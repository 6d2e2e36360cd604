//! `crdgen [DIR]...`: writes the CRDs of Weir's resources into each DIR (default `crds/` and
//! the Helm chart's `charts/weir/crds/`). With `--check`, writes nothing and exits 1 if a
//! DIR's files differ from what it would write.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut check = false;
    let mut dirs = Vec::new();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--check" => check = true,
            other => dirs.push(PathBuf::from(other)),
        }
    }
    if dirs.is_empty() {
        dirs = vec![PathBuf::from("crds"), PathBuf::from("charts/weir/crds")];
    }
    let crds = match weir_operator::crds() {
        Ok(crds) => crds,
        Err(e) => {
            eprintln!("crdgen: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let mut stale = Vec::new();
    for (dir, (name, yaml)) in dirs
        .iter()
        .flat_map(|dir| crds.iter().map(move |crd| (dir, crd)))
    {
        let path = dir.join(name);
        if check {
            if std::fs::read_to_string(&path).ok().as_deref() != Some(yaml.as_str()) {
                stale.push(path.display().to_string());
            }
        } else if let Err(e) =
            std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&path, yaml))
        {
            eprintln!("crdgen: write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    if !stale.is_empty() {
        eprintln!(
            "crdgen: {} differ from the Rust types; run `cargo run -p weir-operator --bin crdgen`",
            stale.join(", ")
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
