
// ---- shaders/hash.wgsl (appended to dropout.wgsl and data.wgsl by src/gpu/pipelines.rs;
// appended, not prepended, so line numbers in those files stay their own) ----

// "lowbias32" integer hash (C. Wellons): full avalanche, cheap on every GPU. The CPU twin is
// `kernels::dropout::hash`.
fn hash(v: u32) -> u32 {
    var h = v;
    h ^= h >> 16u;
    h *= 0x7feb352du;
    h ^= h >> 15u;
    h *= 0x846ca68bu;
    h ^= h >> 16u;
    return h;
}
