
// ---------------------------------------------------------------------------------------
// Appended to matmul.wgsl and matmul_subgroup.wgsl, which declare p, a and db.
// db[i] = sum over k of A(i, k) for i < M, k ascending (bias_backward's order): the linear
// layer's bias gradient when A = dY^T, computed by workgroups appended to the weight
// gradient's grid (rows p.row_sums_at and up) so that it needs no dispatch of its own.
// True in those workgroups, which then do nothing else (a workgroup-uniform branch, taken
// before any barrier or subgroup operation).
fn row_sums(wid: vec3<u32>, nwg: vec3<u32>, li: u32, wg_size: u32) -> bool {
    if (p.row_sums_at == 0u || wid.y < p.row_sums_at) { return false; }
    let i = ((wid.y - p.row_sums_at) * nwg.x + wid.x) * wg_size + li;
    if (i < p.m) {
        var s = 0.0;
        for (var k = 0u; k < p.k; k++) {
            s += a[i * p.a_stride_m + k * p.a_stride_k];
        }
        db[i] = s;
    }
    return true;
}
