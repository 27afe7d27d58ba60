//! What an adapter lets the kernels use (`Caps`, built once from the adapter when the device
//! is created) and the names of the kernel variants (`Variant`), which `--variant` and the
//! kernel-choice files use. Which variant runs which shape is `kernels::select`'s business.

/// What the kernels may use on an adapter, and the user's variant preference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    /// A CPU adapter (lavapipe, WARP): workgroup memory and barriers cost more than they
    /// save there, register blocking and vec4 loads pay (DESIGN §6).
    pub software: bool,
    /// Subgroups of exactly 8 invocations (lavapipe's SIMD width): the subgroup kernels
    /// broadcast with constant lanes 0..7.
    pub subgroups_of_8: bool,
    /// The device's limit on workgroups along one dispatch dimension.
    pub max_workgroups: u32,
    /// `--variant`: used wherever it applies; `Auto` everywhere else.
    pub prefer: Variant,
}

impl Caps {
    /// Mesa lavapipe as CI has it: software, 8-wide subgroups, 65535 workgroups.
    pub const LAVAPIPE: Caps = Caps {
        software: true,
        subgroups_of_8: true,
        max_workgroups: 65535,
        prefer: Variant::Auto,
    };
    /// A discrete GPU with 32-wide subgroups (NVIDIA, AMD RDNA).
    pub const HARDWARE: Caps = Caps {
        software: false,
        subgroups_of_8: false,
        max_workgroups: 65535,
        prefer: Variant::Auto,
    };

    /// Workgroup counts for `invocations` threads in groups of `group_size`, spread over x
    /// and y so that neither exceeds the device's limit (kernels rebuild the linear index
    /// from `num_workgroups`). Past x*y the dispatch itself reports the limit.
    pub fn grid(&self, invocations: usize, group_size: u32) -> [u32; 3] {
        let limit = self.max_workgroups.max(1) as u64;
        let groups = invocations.div_ceil(group_size as usize).max(1) as u64;
        if groups <= limit {
            [groups as u32, 1, 1]
        } else {
            let y = groups.div_ceil(limit);
            let x = groups.div_ceil(y);
            [x as u32, y.min(u32::MAX as u64) as u32, 1]
        }
    }

    /// Is `v` possible at all on this adapter? (`--variant subgroup` needs 8-wide
    /// subgroups; every other variant applies to some shape on any adapter.)
    pub fn supports(&self, v: Variant) -> Result<(), String> {
        if v == Variant::Subgroup && !self.subgroups_of_8 {
            return Err(
                "the subgroup kernels need an adapter whose subgroups are exactly 8 \
                        invocations wide (e.g. lavapipe); this one's are not"
                    .into(),
            );
        }
        Ok(())
    }
}

/// A kernel variant across families, as `--variant` names it.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// The fastest for the shape and adapter (below).
    #[default]
    Auto,
    /// The plain kernels: any shape, no vec4 layouts, subgroups or workgroup tiles.
    Generic,
    /// vec4 loads along contiguous rows (matmul layouts, batch-norm planes of 4k pixels).
    Vec4,
    /// Register-blocked 3x3 stride-1 convolutions.
    #[value(name = "3x3")]
    #[serde(rename = "3x3")]
    Conv3x3,
    /// Workgroup-memory tiles of 64x64 outputs (matmul, convolutions), one workgroup per
    /// plane (batch norm, max pool's sums), one invocation per element (max pool): for
    /// hardware GPUs.
    Tiled,
    /// Subgroup broadcasts (3x3 convolutions, matmul): adapters with 8-wide subgroups.
    Subgroup,
    /// Matrix products with a long K and few output tiles: K in slices, one workgroup per
    /// (tile, slice), then a fixed-order sum of the slices.
    #[value(name = "split-k")]
    #[serde(rename = "split-k")]
    SplitK,
}

impl std::fmt::Display for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Variant::Auto => "auto",
            Variant::Generic => "generic",
            Variant::Vec4 => "vec4",
            Variant::Conv3x3 => "3x3",
            Variant::Tiled => "tiled",
            Variant::Subgroup => "subgroup",
            Variant::SplitK => "split-k",
        })
    }
}
