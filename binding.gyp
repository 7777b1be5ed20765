{
  "targets": [
    {
      "target_name": "zivm",
      "sources": [
        "native/addon.cc",
        "native/region.cc",
        "native/ring.cc",
        "native/readpool.cc",
        "native/doorbell.cc",
        "native/callback.cc",
        "native/spin.cc",
        "native/fdpass.cc",
        "native/errors.cc",
        "native/vfio.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS", "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
      "cflags_cc": ["-std=c++17", "-fno-exceptions", "-Wall", "-Wextra", "-Wno-unused-parameter", "-O2"]
    }
  ]
}
