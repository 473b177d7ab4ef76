# Included from src/CMakeLists.txt: training numerics, part of libtern (no libtorch needed):
# fixed-point rounding and reduced-precision accumulation, and `tern accum`.
target_sources(tern PRIVATE numerics/fixed_point.cpp numerics/accumulation.cpp numerics/accumulation_analytic.cpp numerics/accumulation_avx512.cpp)
target_sources(tern_cli PRIVATE cli/accum_command.cpp)
# The AVX-512 kernels get their own flags and are entered only after run-time detection. No
# contraction anywhere: TwoSum and the exact products must stay as written.
# (-Wno-maybe-uninitialized: GCC 12 warns inside its own _mm512_srlv_epi64/_mm512_cvtps_pd.)
set_source_files_properties(numerics/accumulation.cpp PROPERTIES COMPILE_OPTIONS "-O3;-ffp-contract=off")
set_source_files_properties(numerics/accumulation_avx512.cpp PROPERTIES
  COMPILE_OPTIONS "-O3;-mavx512f;-mavx512bw;-mavx512vl;-mavx512dq;-ffp-contract=off;-Wno-maybe-uninitialized")
