// Test driver for the VideoRopeCache plugin: TensorRT's call sequence without libnvinfer, as driver.cpp does for
// VideoRope, plus what aliased plugin I/O adds: the build capability must be IPluginV3OneBuildV2 (interface version
// 2) and getAliasedInput must name the cache inputs; at enqueue the cache outputs are the cache inputs' buffers, as
// TensorRT binds them with PreviewFeature::kALIASED_PLUGIN_IO_10_03 on (or buffers of their own, poisoned, to check
// the plugin's copy when aliasing is off). Python drives it through ctypes (run_cache.py).
#include "driver_common.h"

#include <algorithm>

using namespace nvinfer1;
using namespace vrdriver;

namespace
{

constexpr int32_t kIn = 9;
constexpr int32_t kOut = 3;

// ---- the case, as Python passes it
struct CacheCase
{
    int64_t qDims[4];  // q's dims in its layout
    int64_t kvDims[4]; // k's (and v's) dims in that layout
    int64_t capacity;  // C of the (B, KV, C, D) caches
    int32_t numAxes;
    int32_t numFreq;
    int32_t dtype; // nvinfer1::DataType value of q, k, v and the caches
    int32_t interleaved;
    int32_t layout;
    float scale;
    int32_t aliased; // 1: each cache output is its input's buffer (TensorRT with aliasing on); 0: a buffer of its own
};

// Descriptors of the 9 inputs and 3 outputs (runtime dims).
std::vector<PluginTensorDesc> describe(CacheCase const& c)
{
    bool const bhsd = c.layout == 0;
    int64_t const b = c.qDims[0], s = c.qDims[bhsd ? 2 : 1], kv = c.kvDims[bhsd ? 1 : 2], d = c.qDims[3];
    DataType const t = static_cast<DataType>(c.dtype);
    std::vector<PluginTensorDesc> r(kIn + kOut);
    for (auto& x : r)
    {
        x.format = TensorFormat::kLINEAR;
        x.scale = 1.0F;
        x.type = t;
    }
    r[0].dims = Dims{4, {c.qDims[0], c.qDims[1], c.qDims[2], c.qDims[3]}};
    r[1].dims = r[2].dims = Dims{4, {c.kvDims[0], c.kvDims[1], c.kvDims[2], c.kvDims[3]}};
    r[3].dims = Dims{3, {c.numAxes, b, s}};
    r[4].dims = r[5].dims = Dims{1, {c.numFreq}};
    r[3].type = r[4].type = DataType::kFLOAT;
    r[5].type = DataType::kINT32;
    r[6].dims = r[7].dims = Dims{4, {b, kv, c.capacity, d}};
    r[8].dims = Dims{1, {b}};
    r[8].type = DataType::kINT32;
    r[9] = r[0];
    r[10] = r[6];
    r[11] = r[7];
    return r;
}

// Is dim j of input i dynamic at build time? B and S everywhere, and the capacity C.
bool dynamicDim(CacheCase const& c, int i, int j)
{
    int const seqAxis = c.layout == 0 ? 2 : 1;
    switch (i)
    {
    case 0:
    case 1:
    case 2: return j == 0 || j == seqAxis;
    case 3: return j > 0;
    case 6:
    case 7: return j == 0 || j == 2;
    case 8: return true;
    default: return false;
    }
}

void checkShapes(IPluginV3OneBuild* build, CacheCase const& c, std::vector<PluginTensorDesc> const& desc)
{
    BuilderImpl impl;
    ExprBuilder eb(&impl);
    DimsExprs in[kIn];
    for (int i = 0; i < kIn; ++i)
    {
        in[i].nbDims = desc[i].dims.nbDims;
        for (int j = 0; j < in[i].nbDims; ++j)
            in[i].d[j] = impl.pool().make(!dynamicDim(c, i, j), desc[i].dims.d[j]);
    }
    DimsExprs out[kOut];
    require(build->getOutputShapes(in, kIn, nullptr, 0, out, kOut, eb) == 0, "getOutputShapes failed");
    int const same[kOut] = {0, 6, 7}; // q_rot has q's shape; each cache output its (aliased) input's
    for (int o = 0; o < kOut; ++o)
    {
        require(out[o].nbDims == 4, "output " + std::to_string(o) + " rank != 4");
        for (int j = 0; j < 4; ++j)
        {
            require(out[o].d[j] != nullptr, "output dim expression is null");
            require(static_cast<Expr const*>(out[o].d[j])->value() == desc[same[o]].dims.d[j],
                "output " + std::to_string(o) + " dim != input " + std::to_string(same[o]) + " dim");
            require(out[o].d[j]->isConstant() == in[same[o]].d[j]->isConstant(), "output dim constness differs");
        }
    }
}

void checkFormats(IPluginV3OneBuild* build, std::vector<PluginTensorDesc> const& desc, DynamicPluginTensorDesc* dyn)
{
    for (int i = 0; i < kIn + kOut; ++i)
    {
        dyn[i].desc = desc[i];
        dyn[i].min = dyn[i].max = dyn[i].opt = desc[i].dims;
    }
    for (int pos = 0; pos < kIn + kOut; ++pos)
        require(build->supportsFormatCombination(pos, dyn, kIn, kOut), "refused its own format at pos " + std::to_string(pos));
    DataType const other = desc[0].type == DataType::kFLOAT ? DataType::kHALF : DataType::kFLOAT;
    DataType const wrong[kIn + kOut] = {DataType::kINT32, other, other, DataType::kHALF, DataType::kHALF,
        DataType::kFLOAT, other, other, DataType::kFLOAT, other, other, other};
    std::vector<DynamicPluginTensorDesc> bad(dyn, dyn + kIn + kOut);
    for (int pos = 0; pos < kIn + kOut; ++pos)
    {
        std::copy(dyn, dyn + kIn + kOut, bad.begin());
        bad[pos].desc.type = wrong[pos];
        require(!build->supportsFormatCombination(pos, bad.data(), kIn, kOut),
            "accepted a wrong type at pos " + std::to_string(pos));
        std::copy(dyn, dyn + kIn + kOut, bad.begin());
        bad[pos].desc.format = TensorFormat::kCHW32;
        require(!build->supportsFormatCombination(pos, bad.data(), kIn, kOut),
            "accepted a non-linear format at pos " + std::to_string(pos));
    }
}

// Build phase: outputs, types, aliasing, shapes, formats, configure, workspace. Returns the workspace size.
size_t buildPhase(IPluginV3* plugin, CacheCase const& c, std::vector<PluginTensorDesc> const& desc, int32_t* aliases)
{
    IPluginCapability* cap = plugin->getCapabilityInterface(PluginCapabilityType::kBUILD);
    require(cap != nullptr, "no build capability");
    InterfaceInfo const info = cap->getInterfaceInfo();
    require(std::string(info.kind) == "PLUGIN_V3ONE_BUILD" && info.major == 2,
        "build capability is " + std::string(info.kind) + " v" + std::to_string(info.major)
            + ", expected PLUGIN_V3ONE_BUILD v2 (IPluginV3OneBuildV2), without which TensorRT never asks for aliases");
    auto* build = static_cast<IPluginV3OneBuildV2*>(cap);
    require(build->getNbOutputs() == kOut, "getNbOutputs != 3");
    for (int o = 0; o < kOut; ++o)
        aliases[o] = build->getAliasedInput(o);
    require(build->getAliasedInput(kOut) == -1, "getAliasedInput answers for an output that does not exist");
    DataType inTypes[kIn];
    for (int i = 0; i < kIn; ++i)
        inTypes[i] = desc[i].type;
    DataType outTypes[kOut] = {DataType::kINT8, DataType::kINT8, DataType::kINT8};
    require(build->getOutputDataTypes(outTypes, kOut, inTypes, kIn) == 0, "getOutputDataTypes failed");
    for (int o = 0; o < kOut; ++o)
        require(outTypes[o] == desc[kIn + o].type, "output " + std::to_string(o) + " type differs");
    checkShapes(build, c, desc);
    DynamicPluginTensorDesc dyn[kIn + kOut];
    checkFormats(build, desc, dyn);
    DynamicPluginTensorDesc cfg[kIn + kOut]; // configurePlugin sees -1 for the dynamic dims, as at build time
    std::copy(dyn, dyn + kIn + kOut, cfg);
    int const source[kIn + kOut] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 6, 7};
    for (int i = 0; i < kIn + kOut; ++i)
        for (int j = 0; j < cfg[i].desc.dims.nbDims; ++j)
            if (dynamicDim(c, source[i], j))
                cfg[i].desc.dims.d[j] = -1;
    require(build->configurePlugin(cfg, kIn, cfg + kIn, kOut) == 0, "configurePlugin failed");
    return build->getWorkspaceSize(dyn, kIn, dyn + kIn, kOut);
}

// Runs onShapeChange + enqueue. host: the 9 inputs (caches already poisoned by the caller); outHost: q_rot, k_cache,
// v_cache as they are after the call.
void runtimePhase(IPluginV3OneRuntime* rt, CacheCase const& c, std::vector<PluginTensorDesc> const& desc,
    size_t workspace, void const* const* host, void* const* outHost)
{
    DeviceBuffers buf;
    std::vector<void*> in(kIn);
    for (int i = 0; i < kIn; ++i)
    {
        size_t const bytes = volume(desc[i].dims) * elemSize(desc[i].type);
        in[i] = buf.alloc(bytes);
        cudaCheck(cudaMemcpy(in[i], host[i], bytes, cudaMemcpyHostToDevice), "copy input");
    }
    void* outs[kOut];
    for (int o = 0; o < kOut; ++o)
    {
        size_t const bytes = volume(desc[kIn + o].dims) * elemSize(desc[kIn + o].type);
        bool const alias = o > 0 && c.aliased;
        outs[o] = alias ? in[o == 1 ? 6 : 7] : buf.alloc(bytes);
        if (!alias)
            cudaCheck(cudaMemset(outs[o], 0xFF, bytes), "poison output"); // NaN in fp32, fp16 and bf16
    }
    void* ws = workspace ? buf.alloc(workspace) : nullptr;
    cudaStream_t stream = nullptr;
    cudaCheck(cudaStreamCreate(&stream), "cudaStreamCreate");
    require(rt->onShapeChange(desc.data(), kIn, desc.data() + kIn, kOut) == 0, "onShapeChange failed");
    std::vector<void const*> cin(in.begin(), in.end());
    int32_t const rc = rt->enqueue(desc.data(), desc.data() + kIn, cin.data(), outs, ws, stream);
    cudaError_t const sync = cudaStreamSynchronize(stream);
    cudaStreamDestroy(stream);
    require(rc == 0, "enqueue failed");
    cudaCheck(sync, "kernel");
    for (int o = 0; o < kOut; ++o)
    {
        size_t const bytes = volume(desc[kIn + o].dims) * elemSize(desc[kIn + o].type);
        cudaCheck(cudaMemcpy(outHost[o], outs[o], bytes, cudaMemcpyDeviceToHost), "copy output");
    }
}

void runCase(char const* libPath, CacheCase const& c, void const* const* host, void* const* outHost, int32_t* aliases)
{
    Library lib(libPath);
    Finder finder;
    IPluginCreatorV3One* creator = findCreator(lib, finder, "VideoRopeCache");
    PluginField fields[3] = {PluginField("interleaved", &c.interleaved, PluginFieldType::kINT32, 1),
        PluginField("layout", &c.layout, PluginFieldType::kINT32, 1),
        PluginField("scale", &c.scale, PluginFieldType::kFLOAT32, 1)};
    PluginFieldCollection fc{3, fields};
    std::unique_ptr<IPluginV3> first(creator->createPlugin("videorope_cache_node", &fc, TensorRTPhase::kBUILD));
    require(first != nullptr, "createPlugin (build) returned null");
    auto* core = static_cast<IPluginV3OneCore*>(first->getCapabilityInterface(PluginCapabilityType::kCORE));
    require(core != nullptr && std::string(core->getPluginName()) == "VideoRopeCache"
            && std::string(core->getPluginVersion()) == "1" && std::string(core->getPluginNamespace()) == "videorope",
        "core capability names differ from VideoRopeCache/1/videorope");
    std::unique_ptr<IPluginV3> built(first->clone()); // the network holds a clone
    first.reset();
    require(built != nullptr, "clone returned null");
    std::vector<PluginTensorDesc> const desc = describe(c);
    size_t const workspace = buildPhase(built.get(), c, desc, aliases);
    auto* rtBuilt = static_cast<IPluginV3OneRuntime*>(built->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    require(rtBuilt != nullptr, "no runtime capability");
    FieldCopy const saved(rtBuilt->getFieldsToSerialize()); // serialize, then recreate as deserialization does
    built.reset();
    std::unique_ptr<IPluginV3> loaded(creator->createPlugin("videorope_cache_node", &saved.fc, TensorRTPhase::kRUNTIME));
    require(loaded != nullptr, "createPlugin (runtime) from serialized fields returned null");
    auto* rtLoaded = static_cast<IPluginV3OneRuntime*>(loaded->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    ResourceContext ctx;
    std::unique_ptr<IPluginV3> attached(rtLoaded->attachToContext(&ctx));
    require(attached != nullptr, "attachToContext returned null");
    loaded.reset();
    if (host == nullptr)
        return; // build-time protocol only: no GPU needed
    auto* rt = static_cast<IPluginV3OneRuntime*>(attached->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    runtimePhase(rt, c, desc, workspace, host, outHost);
}

} // namespace

// Runs one VideoRopeCache case. `host` holds the 9 inputs (or is NULL for the build-time protocol only); `out`
// receives q_rot, k_cache_out, v_cache_out; `aliases` the plugin's getAliasedInput(0..2). Returns 0, or 1 with the
// reason in `msg`.
extern "C" int vr_driver_cache_run(char const* lib, CacheCase const* c, void const* const* host, void* const* out,
    int32_t* aliases, char* msg, int len)
{
    gLog.clear();
    try
    {
        runCase(lib, *c, host, out, aliases);
        return gLog.empty() ? 0 : fail("the plugin logged errors", msg, len);
    }
    catch (std::exception const& e)
    {
        return fail(e.what(), msg, len);
    }
}
