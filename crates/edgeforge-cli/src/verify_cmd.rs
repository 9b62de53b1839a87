//! `edgeforge verify DIR [--public-key F]`, `edgeforge keygen --out DIR` and `edgeforge serve DIR`: check an
//! export folder against its manifest.json (and signature), make a signing key pair, serve a verified folder.

use anyhow::anyhow;

use crate::cli::{KeygenArgs, ServeArgs, VerifyArgs};
use crate::exit::Failure;

pub fn verify(a: VerifyArgs) -> Result<(), Failure> {
    let key = a
        .public_key
        .as_deref()
        .map(edgeforge_targets::manifest::read_public_key)
        .transpose()
        .map_err(|e| Failure::BadInput(anyhow!(e)))?;
    let v = edgeforge_targets::manifest::verify(&a.dir, key.as_ref()).map_err(|e| Failure::BadInput(anyhow!(e)))?;
    for p in &v.problems {
        println!("MISMATCH {p}");
    }
    use edgeforge_targets::manifest::SignatureState;
    let sig = match v.signature {
        Some(SignatureState::Valid) => ", signature valid",
        Some(SignatureState::Invalid) => ", signature INVALID",
        Some(SignatureState::NotSigned) => ", not signed",
        None => "",
    };
    if v.problems.is_empty() {
        println!("{}: {} files match manifest.json{sig}", a.dir.display(), v.files_checked);
        Ok(())
    } else {
        Err(Failure::GateFailed(anyhow!("{}: {} problem(s) against manifest.json{sig}", a.dir.display(), v.problems.len())))
    }
}

pub fn keygen(a: KeygenArgs) -> Result<(), Failure> {
    std::fs::create_dir_all(&a.out).map_err(|e| Failure::BadInput(anyhow!("{}: {e}", a.out.display())))?;
    let (k, p) = edgeforge_targets::manifest::generate_key_pair(&a.out, &a.name, a.force).map_err(|e| match e {
        edgeforge_targets::TargetError::Key { .. } => Failure::BadInput(anyhow!(e)),
        _ => Failure::Internal(anyhow!(e)),
    })?;
    println!("signing key (keep private): {}\npublic key: {}", k.display(), p.display());
    Ok(())
}

pub fn serve(a: ServeArgs) -> Result<(), Failure> {
    let o = edgeforge_serve::ServeOptions {
        dir: a.dir,
        listen: a.listen,
        public_key: a.public_key,
        threads: a.threads,
        max_queue: a.max_queue,
        max_tokens: a.max_tokens,
        ctx: a.ctx,
        timeout: std::time::Duration::from_secs(a.timeout_s),
        rounding: a.rounding.runtime(),
        sandbox: !a.no_sandbox,
    };
    edgeforge_serve::serve(&o).map_err(|e| if e.is_bad_input() { Failure::BadInput(anyhow!(e)) } else { Failure::Internal(anyhow!(e)) })
}
