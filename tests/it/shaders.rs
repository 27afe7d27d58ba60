//! Every shader parses and validates with naga, and a broken one is reported with its file
//! and line.

use wgpu_fmnist::gpu::SHADERS;
use wgpu_fmnist::shader_check::{validate_shader, validate_wgsl, validate_wgsl_with};

#[test]
fn every_shader_validates_with_naga() {
    for shader in SHADERS {
        let module = validate_shader(shader).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            !module.entry_points.is_empty(),
            "{} has no entry points",
            shader.path
        );
    }
}

#[test]
fn shader_error_names_file_and_line() {
    let source = "@compute @workgroup_size(1)\nfn main() {\n    let x: f32 = 1u;\n}\n";
    let err = validate_wgsl("shaders/broken.wgsl", source).unwrap_err();
    assert!(
        err.contains("shaders/broken.wgsl:3:"),
        "error does not point at file:line: {err}"
    );
}

#[test]
fn subgroup_operations_need_a_subgroup_shader() {
    // A kernel family marks the files that use subgroups; anywhere else they are an error,
    // so a subgroup operation cannot slip into a kernel that must run on every adapter.
    let source = "@group(0) @binding(0) var<storage, read_write> y: array<f32>;\n\
                  @compute @workgroup_size(8)\n\
                  fn main(@builtin(local_invocation_index) i: u32) {\n    \
                  y[i] = subgroupBroadcast(y[i], 0u);\n}\n";
    assert!(validate_wgsl("shaders/plain.wgsl", source).is_err());
    validate_wgsl_with("shaders/sub.wgsl", source, true).unwrap_or_else(|e| panic!("{e}"));
    let marked: Vec<&str> = SHADERS
        .iter()
        .filter(|s| s.subgroups)
        .map(|s| s.path)
        .collect();
    assert_eq!(
        marked,
        [
            "shaders/matmul_subgroup.wgsl",
            "shaders/conv2d_subgroup.wgsl"
        ]
    );
}

#[test]
fn the_step_counter_is_read_only_except_where_it_advances() {
    // A read_write binding orders every later dispatch after the kernel on most drivers;
    // the counter is read by the data, dropout, augmentation and pool kernels and written,
    // through a binding named `counter_rw`, only where a step ends: the optimizer's update
    // and the loss (see kernels::optim).
    let mut seen = 0;
    for shader in SHADERS {
        let module = validate_shader(shader).unwrap();
        for (_, var) in module.global_variables.iter() {
            let name = var.name.as_deref().unwrap_or("");
            if let naga::AddressSpace::Storage { access } = var.space {
                let writable = access.contains(naga::StorageAccess::STORE);
                if name == "counter" {
                    seen += 1;
                    assert!(!writable, "{}: `counter` is read_write", shader.path);
                }
                if name == "counter_rw" {
                    assert!(
                        ["optim", "softmax_xent"].contains(&shader.name),
                        "{}: a writable counter",
                        shader.path
                    );
                }
            }
        }
    }
    assert!(seen >= 4, "the counter is bound in {seen} shaders");
}

/// Operator mixes that WGSL's grammar forbids without parentheses, which naga accepts but
/// browsers' compiler (Tint) rejects: an operand of `&`, `|` or `^` must be a unary
/// expression (`a >= b & c < d` is an error), and `&&` does not mix with `||`. Reports
/// `line: expression` for each. Operators are recognised by the spaces our style puts
/// around binary operators (which keeps `vec4<f32>` and `&buffer` out).
fn unparenthesised_mixes(source: &str) -> Vec<String> {
    let text: String = source
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let binary = [
        " + ", " - ", " * ", " / ", " % ", " << ", " >> ", " < ", " > ", " <= ", " >= ", " == ",
        " != ",
    ];
    let mut found = Vec::new();
    // One segment per nesting level: the text between separators at that level, with
    // nested parentheses blanked out, and the line it starts on.
    let mut stack: Vec<(usize, String)> = vec![(0, String::new())];
    let mut line = 1;
    let check = |start: usize, seg: &str, found: &mut Vec<String>| {
        let seg = format!(" {} ", seg.split_whitespace().collect::<Vec<_>>().join(" "));
        let has = |op: &str| seg.contains(op);
        let bitwise = [" & ", " | ", " ^ "]
            .into_iter()
            .filter(|op| has(op))
            .count();
        let logical = [" && ", " || "].into_iter().filter(|op| has(op)).count();
        let other = binary.iter().any(|op| has(op));
        if (bitwise > 0 && (other || bitwise > 1 || logical > 0)) || logical > 1 {
            found.push(format!("{start}: {}", seg.trim()));
        }
    };
    for c in text.chars() {
        let top = stack.last_mut().unwrap();
        if top.1.trim().is_empty() && !c.is_whitespace() {
            top.0 = line;
        }
        match c {
            '(' | '[' => {
                top.1.push_str(" x ");
                stack.push((line, String::new()));
            }
            ')' | ']' => {
                let (start, seg) = stack.pop().unwrap();
                check(start, &seg, &mut found);
                if stack.is_empty() {
                    stack.push((line, String::new()));
                }
            }
            ';' | ',' | '{' | '}' => {
                check(top.0, &top.1, &mut found);
                top.1.clear();
            }
            _ => {
                line += usize::from(c == '\n');
                top.1.push(c);
            }
        }
    }
    found
}

#[test]
fn no_shader_mixes_operators_that_wgsl_wants_parenthesised() {
    let bad = "let a = x >= 0 & x < n;\nlet b = (x >= 0) & (x < n);\nlet c = u & 1u == 1u;\n\
               let d = p || q && r;\nlet e = (h & 1u) == 1u || p && (q);\nlet f = a & b | c;\n";
    let found = unparenthesised_mixes(bad);
    assert_eq!(found.len(), 5, "{found:?}");
    assert!(
        found[0].starts_with("1: ") && found[1].starts_with("3: "),
        "{found:?}"
    );
    let mut offenders = Vec::new();
    for shader in SHADERS {
        for f in unparenthesised_mixes(shader.source) {
            offenders.push(format!("{}:{f}", shader.path));
        }
    }
    assert!(offenders.is_empty(), "{}", offenders.join("\n"));
}
