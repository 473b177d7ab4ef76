# Kernel sources for libtern (included from src/CMakeLists.txt; paths relative to src/). Each
# ISA-specific file gets its own flags and is only entered after run-time detection
# (kernels/cpu_features.cpp), so the library itself needs no -march.
set(_tern_kernels_dir ${CMAKE_CURRENT_LIST_DIR})

set(_tern_avx2_sources
  ${_tern_kernels_dir}/fp32/sgemm_avx2.cpp
  ${_tern_kernels_dir}/fp32/depthwise_conv2d_avx2.cpp)
set(_tern_avx512_sources
  ${_tern_kernels_dir}/fp32/sgemm_avx512.cpp
  ${_tern_kernels_dir}/fp32/depthwise_conv2d_avx512.cpp)

set(_tern_int8_avx2_sources ${_tern_kernels_dir}/int8/qgemm_avx2.cpp ${_tern_kernels_dir}/int8/ternary_panels_avx2.cpp
  ${_tern_kernels_dir}/int8/int4_panels_avx2.cpp)
# AVX-VNNI (vpdpbusd ymm) versions of the AVX2 streaming kernels, for AVX2 machines without AVX-512.
set(_tern_int8_avxvnni_sources ${_tern_kernels_dir}/int8/stream_avxvnni.cpp ${_tern_kernels_dir}/int8/qgemm_avxvnni.cpp
  ${_tern_kernels_dir}/int8/depthwise_avxvnni.cpp)
set(_tern_int8_avx512_sources ${_tern_kernels_dir}/int8/qgemm_avx512.cpp ${_tern_kernels_dir}/int8/ternary_panels_avx512.cpp
  ${_tern_kernels_dir}/int8/int4_panels_avx512.cpp
  ${_tern_kernels_dir}/int8/qgemm_indirect_avx512.cpp ${_tern_kernels_dir}/int8/depthwise_avx512_vnni.cpp)

list(APPEND TERN_KERNEL_SOURCES
  ${_tern_kernels_dir}/fp32/rows.cpp
  ${_tern_kernels_dir}/fp32/rows_avx2.cpp
  ${_tern_kernels_dir}/fp32/rows_avx512.cpp
  ${_tern_kernels_dir}/int8/requantize_avx2.cpp
  ${_tern_kernels_dir}/int8/requantize_avx512.cpp
  ${_tern_kernels_dir}/cpu_features.cpp
  ${_tern_kernels_dir}/fp32/sgemm.cpp
  ${_tern_kernels_dir}/fp32/conv2d.cpp
  ${_tern_kernels_dir}/fp32/depthwise_conv2d.cpp
  ${_tern_kernels_dir}/int8/qgemm.cpp
  ${_tern_kernels_dir}/int8/qgemm_indirect.cpp
  ${_tern_kernels_dir}/int8/requantize.cpp
  ${_tern_kernels_dir}/int8/ternary_panels.cpp
  ${_tern_kernels_dir}/int8/int4_panels.cpp
  ${_tern_avx2_sources}
  ${_tern_avx512_sources}
  ${_tern_int8_avx2_sources}
  ${_tern_int8_avxvnni_sources}
  ${_tern_int8_avx512_sources})

set_source_files_properties(${_tern_avx2_sources} PROPERTIES COMPILE_OPTIONS "-mavx2;-mfma")
set_source_files_properties(${_tern_avx512_sources} PROPERTIES
  COMPILE_OPTIONS "-mavx512f;-mavx512bw;-mavx512vl;-mavx512dq;-mfma")
set_source_files_properties(${_tern_int8_avx2_sources} PROPERTIES COMPILE_OPTIONS "-mavx2")
set_source_files_properties(${_tern_int8_avxvnni_sources} PROPERTIES COMPILE_OPTIONS "-mavx2;-mavxvnni")
# The epilogue is one loop source built per ISA; no FMA contraction, so every ISA rounds alike.
# (-Wno-maybe-uninitialized, -Wno-uninitialized: GCC 12 warns inside its own _mm512_max_ps /
# _mm512_min_ps. -fno-tree-ter: the AVX-512 and AVX2 epilogues write 4 columns' activation chains step by
# step, interleaved; GCC's temporary-expression replacement would rebuild each column's chain as
# one expression tree and emit them one after the other.)
set_source_files_properties(${_tern_kernels_dir}/int8/requantize.cpp PROPERTIES COMPILE_OPTIONS "-O3;-ffp-contract=off")
set_source_files_properties(${_tern_kernels_dir}/int8/requantize_avx2.cpp PROPERTIES
  COMPILE_OPTIONS "-O3;-mavx2;-ffp-contract=off;$<$<CXX_COMPILER_ID:GNU>:-fno-tree-ter>")
set_source_files_properties(${_tern_kernels_dir}/int8/requantize_avx512.cpp PROPERTIES
  COMPILE_OPTIONS "-O3;-mavx512f;-mavx512bw;-mavx512vl;-mavx512dq;-mprefer-vector-width=512;-ffp-contract=off;-Wno-maybe-uninitialized;-Wno-uninitialized;$<$<CXX_COMPILER_ID:GNU>:-fno-tree-ter>")
# The FP32 row kernels likewise (rows.h).
set_source_files_properties(${_tern_kernels_dir}/fp32/rows.cpp PROPERTIES COMPILE_OPTIONS "-O3;-ffp-contract=off;-fno-trapping-math")
set_source_files_properties(${_tern_kernels_dir}/fp32/rows_avx2.cpp PROPERTIES
  COMPILE_OPTIONS "-O3;-mavx2;-ffp-contract=off;-fno-trapping-math")
set_source_files_properties(${_tern_kernels_dir}/fp32/rows_avx512.cpp PROPERTIES
  COMPILE_OPTIONS "-O3;-mavx512f;-mavx512bw;-mavx512vl;-mavx512dq;-mprefer-vector-width=512;-ffp-contract=off;-fno-trapping-math")
set_source_files_properties(${_tern_int8_avx512_sources} PROPERTIES
  COMPILE_OPTIONS "-mavx512f;-mavx512bw;-mavx512vl;-mavx512vnni")
