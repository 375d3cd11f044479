/* kernel_names.h - each instruction set level's kernels under names of
 * their own.
 *
 * One binary carries the CPU kernels for several levels (cpu.h): the
 * Makefile compiles every file of KERNEL_SRC once per level, with that
 * level's -march flags, -DSD_KLEVEL=<level> and `-include` this header,
 * which renames every symbol those files define: winograd_run becomes
 * winograd_run_avx2, winograd_run_avx512, ... kernels.c picks the set for
 * the level cpu_level() chooses at start-up (and offers the few entry
 * points other code calls by their plain names).
 */
#ifndef SD_KERNEL_NAMES_H
#define SD_KERNEL_NAMES_H

#ifndef SD_KLEVEL
#error "kernel_names.h is for the per-level kernel builds (-DSD_KLEVEL=...)"
#endif

#define SD_KCAT_(a, b) a##_##b
#define SD_KCAT(a, b) SD_KCAT_(a, b)
#define SD_KNAME(x) SD_KCAT(x, SD_KLEVEL)

/* ops_cpu.c */
#define nn_backend_cpu SD_KNAME(nn_backend_cpu)
#define nn_backend_cpu_bf16 SD_KNAME(nn_backend_cpu_bf16)
#define nn_backend_cpu_wide SD_KNAME(nn_backend_cpu_wide)
/* attention.c, attention_lanes.c, attention_lanes32.c */
#define attention_forward SD_KNAME(attention_forward)
#define attention_forward_bf16 SD_KNAME(attention_forward_bf16)
#define attention_ws SD_KNAME(attention_ws)
#define attention_ws_bf16 SD_KNAME(attention_ws_bf16)
#define attention_lanes_forward SD_KNAME(attention_lanes_forward)
#define attention_lanes_forward_ex SD_KNAME(attention_lanes_forward_ex)
#define attention_lanes_ws SD_KNAME(attention_lanes_ws)
#define attention_lanes32_forward SD_KNAME(attention_lanes32_forward)
#define attention_lanes32_ok SD_KNAME(attention_lanes32_ok)
#define attention_lanes32_ws SD_KNAME(attention_lanes32_ws)
/* gemm_f32.c */
#define gemm_f32_free SD_KNAME(gemm_f32_free)
#define gemm_f32_pack SD_KNAME(gemm_f32_pack)
#define gemm_f32_pack_batch SD_KNAME(gemm_f32_pack_batch)
#define gemm_f32_run SD_KNAME(gemm_f32_run)
#define gemm_f32_run_batch SD_KNAME(gemm_f32_run_batch)
#define gemm_f32_wanted SD_KNAME(gemm_f32_wanted)
/* gemm_bf16.c */
#define gemm_bf16_panel SD_KNAME(gemm_bf16_panel)
/* winograd.c */
#define winograd_eligible SD_KNAME(winograd_eligible)
#define winograd_owns SD_KNAME(winograd_owns)
#define winograd_plan SD_KNAME(winograd_plan)
#define winograd_prepare SD_KNAME(winograd_prepare)
#define winograd_release SD_KNAME(winograd_release)
#define winograd_run SD_KNAME(winograd_run)
#define winograd_run_in16 SD_KNAME(winograd_run_in16)
#define winograd_weight_bytes SD_KNAME(winograd_weight_bytes)
#define winograd_ws SD_KNAME(winograd_ws)
/* onednn.c */
#define onednn_bmm_free SD_KNAME(onednn_bmm_free)
#define onednn_bmm_plan SD_KNAME(onednn_bmm_plan)
#define onednn_bmm_run SD_KNAME(onednn_bmm_run)
#define onednn_conv2d_plan SD_KNAME(onednn_conv2d_plan)
#define onednn_conv2d_prepare SD_KNAME(onednn_conv2d_prepare)
#define onednn_conv2d_run SD_KNAME(onednn_conv2d_run)
#define onednn_conv2d_run_in16 SD_KNAME(onednn_conv2d_run_in16)
#define onednn_conv2d_ws SD_KNAME(onednn_conv2d_ws)
#define onednn_gemm SD_KNAME(onednn_gemm)
#define onednn_layer_release SD_KNAME(onednn_layer_release)
#define onednn_linear_plan SD_KNAME(onednn_linear_plan)
#define onednn_linear_plan_b2b SD_KNAME(onednn_linear_plan_b2b)
#define onednn_linear_prepare SD_KNAME(onednn_linear_prepare)
#define onednn_linear_run SD_KNAME(onednn_linear_run)
#define onednn_linear_run_b2b SD_KNAME(onednn_linear_run_b2b)
#define onednn_linear_run_bf16 SD_KNAME(onednn_linear_run_bf16)
#define onednn_linear_ws SD_KNAME(onednn_linear_ws)
#define onednn_weight_bytes SD_KNAME(onednn_weight_bytes)

#endif
