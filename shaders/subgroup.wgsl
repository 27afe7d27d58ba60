// ---- shaders/subgroup.wgsl (appended to the *_subgroup.wgsl files by src/gpu/pipelines.rs,
// like hash.wgsl, so line numbers in those files stay their own) ----

// The vec4 lane K of an 8-wide subgroup holds, in every lane: a broadcast, which WGSL
// wants with a constant lane index, hence one function per lane.
fn lane0(v: vec4<f32>) -> vec4<f32> { return vec4<f32>(subgroupBroadcast(v.x, 0u), subgroupBroadcast(v.y, 0u), subgroupBroadcast(v.z, 0u), subgroupBroadcast(v.w, 0u)); }
fn lane1(v: vec4<f32>) -> vec4<f32> { return vec4<f32>(subgroupBroadcast(v.x, 1u), subgroupBroadcast(v.y, 1u), subgroupBroadcast(v.z, 1u), subgroupBroadcast(v.w, 1u)); }
fn lane2(v: vec4<f32>) -> vec4<f32> { return vec4<f32>(subgroupBroadcast(v.x, 2u), subgroupBroadcast(v.y, 2u), subgroupBroadcast(v.z, 2u), subgroupBroadcast(v.w, 2u)); }
fn lane3(v: vec4<f32>) -> vec4<f32> { return vec4<f32>(subgroupBroadcast(v.x, 3u), subgroupBroadcast(v.y, 3u), subgroupBroadcast(v.z, 3u), subgroupBroadcast(v.w, 3u)); }
fn lane4(v: vec4<f32>) -> vec4<f32> { return vec4<f32>(subgroupBroadcast(v.x, 4u), subgroupBroadcast(v.y, 4u), subgroupBroadcast(v.z, 4u), subgroupBroadcast(v.w, 4u)); }
fn lane5(v: vec4<f32>) -> vec4<f32> { return vec4<f32>(subgroupBroadcast(v.x, 5u), subgroupBroadcast(v.y, 5u), subgroupBroadcast(v.z, 5u), subgroupBroadcast(v.w, 5u)); }
fn lane6(v: vec4<f32>) -> vec4<f32> { return vec4<f32>(subgroupBroadcast(v.x, 6u), subgroupBroadcast(v.y, 6u), subgroupBroadcast(v.z, 6u), subgroupBroadcast(v.w, 6u)); }
fn lane7(v: vec4<f32>) -> vec4<f32> { return vec4<f32>(subgroupBroadcast(v.x, 7u), subgroupBroadcast(v.y, 7u), subgroupBroadcast(v.z, 7u), subgroupBroadcast(v.w, 7u)); }
