//! KL107: several heavy ML frameworks in one step.

use super::{Hit, hit, operands, python_install};
use crate::script::Invocation;

/// A package name's framework, if it is a heavy one (the wheels of each
/// are hundreds of megabytes to gigabytes).
fn framework(spec: &str) -> Option<&'static str> {
    let name: String = spec
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect::<String>()
        .to_ascii_lowercase()
        .replace('_', "-");
    Some(match name.as_str() {
        "torch" | "torchvision" | "torchaudio" => "torch",
        "tensorflow" | "tensorflow-gpu" | "tensorflow-cpu" | "tf-nightly" => "tensorflow",
        "jax" | "jaxlib" => "jax",
        "onnxruntime" | "onnxruntime-gpu" => "onnxruntime",
        "mxnet" => "mxnet",
        "paddlepaddle" | "paddlepaddle-gpu" => "paddlepaddle",
        _ => return None,
    })
}

pub(crate) fn heavy_frameworks(invocations: &[Invocation], out: &mut Vec<Hit>) {
    let mut found: Vec<&'static str> = Vec::new();
    let mut first_line = None;
    for inv in invocations {
        let args: &[String] = match python_install(inv) {
            Some((_, args)) => args,
            None if inv.name == "conda" || inv.name == "mamba" || inv.name == "micromamba" => {
                if inv.args.first().is_none_or(|a| a != "install") {
                    continue;
                }
                &inv.args[1..]
            }
            None => continue,
        };
        for spec in operands(
            args,
            &[
                "-r",
                "-c",
                "-e",
                "-i",
                "--index-url",
                "--extra-index-url",
                "-f",
                "--find-links",
                "--timeout",
                "--default-timeout",
            ],
        ) {
            if let Some(f) = framework(spec)
                && !found.contains(&f)
            {
                found.push(f);
                first_line.get_or_insert(inv.line);
            }
        }
    }
    if found.len() >= 2 {
        out.push(hit(
            "KL107",
            first_line.unwrap_or_default(),
            format!("one step installs {}", found.join(", ")),
        ));
    }
}
