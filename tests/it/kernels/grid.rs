//! Grids past the device's workgroup limit: every grid-based kernel spreads its work over
//! two dimensions and must still compute every output. Devices here are created with a
//! small `max_compute_workgroups_per_dimension` so that small shapes need 2-D grids (a real
//! GPU reaches them at shapes too large to test against a CPU reference).

use crate::common::*;
use std::collections::HashSet;
use wgpu_fmnist::gpu::{AdapterRequest, Dispatch, Gpu, GpuError, Tensor};
use wgpu_fmnist::kernels::{conv2d::*, elementwise, select};

fn small_device(limit: u32) -> Gpu {
    Gpu::new_with(&AdapterRequest::default(), |l| {
        l.max_compute_workgroups_per_dimension = limit
    })
    .unwrap_or_else(|e| panic!("device with {limit} workgroups per dimension: {e}"))
}

/// Runs `d` and, if the kernel under test (the dispatch doing the arithmetic, not a weight
/// packing or a partial-sum reduction) ran on a 2-D grid, returns its name.
fn run_on(g: &Gpu, d: &[Dispatch]) -> Option<String> {
    g.run(&d.iter().collect::<Vec<_>>()).expect("run");
    let main = d.iter().max_by(|a, b| a.flops().total_cmp(&b.flops()))?;
    let [_, y, z] = main.workgroups();
    // The subgroup conv uses y for channel blocks and z for the overflow.
    let two_d = if main.label().contains("3x3_subgroup") && !main.label().contains("weight") {
        z > 1
    } else if main.label().contains("_tiled") && !main.label().contains("weight") {
        // The tiled kernels use y for channel tiles and z for the pixel tiles' overflow.
        z > 1
    } else {
        y > 1
    };
    two_d.then(|| main.label().split(' ').next().unwrap_or("").to_string())
}

#[test]
fn kernels_compute_every_output_on_two_dimensional_grids() {
    // 3x3 pad 1 so every conv variant applies; 9+ channels so the subgroup ones are chosen.
    // Sized for the subgroup forward (4 x 4 outputs per invocation): 40 * 4 * 4 = 640 items,
    // 10 workgroups, need a 2-D grid at limit 8, the first where its weight packing (9 * 9 *
    // 32 = 2,592 threads, 41 workgroups) fits.
    let s = Conv2dShape {
        n: 40,
        ci: 9,
        h: 16,
        w: 16,
        co: 32,
        kh: 3,
        kw: 3,
        stride: 1,
        pad: 1,
    };
    let mut r = rng(5);
    let x = r.vec(s.input_len(), -1.0, 1.0);
    let w = r.vec(s.weight_len(), -0.3, 0.3);
    let b = r.vec(s.co, -0.3, 0.3);
    let dy = r.vec(s.output_len(), -1.0, 1.0);
    let mut y_ref = vec![0.0; s.output_len()];
    conv2d_forward_reference(&mut y_ref, &x, &w, &b, s);
    let (mut dx_ref, mut dw_ref, mut db_ref) =
        (vec![0.0; x.len()], vec![0.0; w.len()], vec![0.0; s.co]);
    conv2d_backward_reference(&mut dx_ref, &mut dw_ref, &mut db_ref, &dy, &x, &w, s);
    let relu_ref: Vec<f32> = dy.iter().map(|v| v.max(0.0)).collect();

    let mut two_d: HashSet<String> = HashSet::new();
    for limit in [4, 6, 8, 12, 16, 24, 32, 48, 64] {
        let g = small_device(limit);
        let up = |name: &str, v: &[f32]| -> Tensor { g.upload(name, v).unwrap() };
        let (tx, tw, tb, tdy) = (up("x", &x), up("w", &w), up("b", &b), up("dy", &dy));
        let check = |what: &str, t: &Tensor, want: &[f32]| {
            let got: Vec<f32> = g.read(t).unwrap();
            assert_kernel_close(&format!("{what} at limit {limit}"), &got, want);
        };
        // A grid over the limit in both dimensions is an error naming the limit; skip it.
        let skip = |e: &GpuError| matches!(e, GpuError::DispatchTooLarge { .. });
        for v in select::conv2d::applicable(&g.caps, &s) {
            let ty = g.zeros("y", s.output_len()).unwrap();
            match conv2d_forward_with(&g, v, s, &tx, &tw, &tb, &ty) {
                Ok(d) => {
                    two_d.extend(run_on(&g, &d));
                    check(&format!("forward {v}"), &ty, &y_ref);
                }
                Err(e) if skip(&e) => {}
                Err(e) => panic!("forward {v}: {e}"),
            }
            let tdx = g.zeros("dx", s.input_len()).unwrap();
            match conv2d_backward_input_with(&g, v, s, &tdy, &tw, &tdx) {
                Ok(d) => {
                    two_d.extend(run_on(&g, &d));
                    check(&format!("input gradient {v}"), &tdx, &dx_ref);
                }
                Err(e) if skip(&e) => {}
                Err(e) => panic!("input gradient {v}: {e}"),
            }
            let tdw = g.zeros("dw", s.weight_len()).unwrap();
            match conv2d_backward_weight_with(&g, v, s, &tdy, &tx, &tdw) {
                Ok(d) => {
                    two_d.extend(run_on(&g, &d));
                    check(&format!("weight gradient {v}"), &tdw, &dw_ref);
                }
                Err(e) if skip(&e) => {}
                Err(e) => panic!("weight gradient {v}: {e}"),
            }
        }
        let ty = g.zeros("relu", dy.len()).unwrap();
        match elementwise::relu_forward(&g, &tdy, &ty, dy.len()) {
            Ok(d) => {
                two_d.extend(run_on(&g, &[d]));
                check("relu", &ty, &relu_ref);
            }
            Err(e) if skip(&e) => {}
            Err(e) => panic!("relu: {e}"),
        }
    }
    let mut want = vec![
        "conv2d::conv2d_forward",
        "conv2d::conv2d_backward_input",
        "conv2d::conv2d_backward_weight",
        "conv2d::conv2d_forward_3x3",
        "conv2d::conv2d_backward_weight_3x3",
        "elementwise::relu_forward",
        "conv2d_tiled::conv2d_forward_tiled",
        "conv2d_tiled::conv2d_backward_input_tiled",
    ];
    // The subgroup weight gradient runs above too, but never needs a 2-D grid at a size
    // a test can reach: it launches about max(64, its (co, ci) blocks) / 8 workgroups, and
    // a limit below that is too small for the partial-sum reduction that follows it.
    if gpu().caps.subgroups_of_8 {
        want.push("conv2d_subgroup::conv2d_forward_3x3_subgroup");
    }
    for k in want {
        assert!(two_d.contains(k), "{k} never ran on a 2-D grid: {two_d:?}");
    }
}
