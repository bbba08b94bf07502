// TensorRT IPluginV3 for the VideoRopeCache op (contract: videorope_trt/rope/contract.py; kernel:
// videorope_cache_kernel.cu).
//
// Inputs:  0 q, 1 k, 2 v (fp32/fp16/bf16, one dtype; (B,H,S,D) or (B,S,H,D)), 3 positions (A,B,S) fp32,
//          4 inv_freq (F) fp32, 5 axis_map (F) int32, 6 k_cache, 7 v_cache ((B,KV,C,D), q's dtype), 8 write_offset (B)
//          int32.
// Outputs: 0 q_rot (q's shape and type), 1 k_cache_out aliasing input 6, 2 v_cache_out aliasing input 7.
// Fields:  interleaved (INT32), layout (INT32), scale (FLOAT32), as VideoRope.
//
// With PreviewFeature::kALIASED_PLUGIN_IO_10_03 on, TensorRT asks getAliasedInput and binds each cache output to
// its input's memory, so enqueue receives outputs[1] == inputs[6] and writes the S new rows in place. Without it
// (or wherever TensorRT gives the outputs their own memory) enqueue first copies each cache into its output, then
// writes: the same result, at the cost of moving the whole cache.
#include "videorope_cache_plugin.h"

#if VIDEOROPE_CACHE_PLUGIN

#include "videorope_cache_kernel.h"

#include <cuda_runtime_api.h>

#include <exception>

using namespace nvinfer1;

namespace videorope
{
namespace
{

char const* const kName = "VideoRopeCache";
char const* const kVersion = "1";
char const* const kNamespace = "videorope";
constexpr int32_t kNbInputs = 9;
constexpr int32_t kNbOutputs = 3;
enum Input : int32_t
{
    kQ = 0, kK, kV, kPositions, kInvFreq, kAxisMap, kKCache, kVCache, kOffset
};

void logError(std::string const& msg)
{
    logPluginError(kName, msg);
}

bool counts(int32_t nbInputs, int32_t nbOutputs)
{
    return nbInputs == kNbInputs && nbOutputs == kNbOutputs;
}

template <typename Desc, typename GetDims>
std::string checkDescs(Desc const* in, GetDims dimsOf, int32_t layout)
{
    Dims d[kNbInputs];
    for (int32_t i = 0; i < kNbInputs; ++i)
        d[i] = dimsOf(in[i]);
    return checkCacheShapes(d, layout);
}

} // namespace

std::string checkCacheShapes(Dims const* in, int32_t layout)
{
    auto const eq = [](int64_t a, int64_t b) { return a < 0 || b < 0 || a == b; };
    std::string const err = checkShapes(in[kQ], in[kPositions], in[kInvFreq], in[kAxisMap], layout);
    if (!err.empty())
        return err;
    Dims const &q = in[kQ], &k = in[kK], &v = in[kV], &kc = in[kKCache], &vc = in[kVCache], &off = in[kOffset];
    int const seqAxis = layout == 0 ? 2 : 1;
    int const headAxis = layout == 0 ? 1 : 2;
    if (k.nbDims != 4 || !eq(k.d[0], q.d[0]) || !eq(k.d[seqAxis], q.d[seqAxis]) || !eq(k.d[3], q.d[3]))
        return "k " + dims(k) + " must be 4-D and share B, S, D with q " + dims(q);
    bool sameKV = v.nbDims == 4;
    for (int32_t j = 0; sameKV && j < 4; ++j)
        sameKV = eq(v.d[j], k.d[j]);
    if (!sameKV)
        return "v " + dims(v) + " must have k's shape " + dims(k);
    bool cacheOk = kc.nbDims == 4 && vc.nbDims == 4 && eq(kc.d[0], q.d[0]) && eq(kc.d[1], k.d[headAxis])
        && eq(kc.d[3], q.d[3]);
    for (int32_t j = 0; cacheOk && j < 4; ++j)
        cacheOk = eq(vc.d[j], kc.d[j]);
    if (!cacheOk)
        return "k_cache " + dims(kc) + " and v_cache " + dims(vc) + " must both be (B, KV, C, D) with B, KV, D of k "
            + dims(k);
    if (off.nbDims != 1 || !eq(off.d[0], q.d[0]))
        return "write_offset " + dims(off) + " must be (B) with B of q " + dims(q);
    return {};
}

VideoRopeCachePlugin::VideoRopeCachePlugin(RopeAttrs const& attrs)
    : mAttrs(attrs)
{
    mFields = declaredFields(&mAttrs);
    mFieldCollection.nbFields = static_cast<int32_t>(mFields.size());
    mFieldCollection.fields = mFields.data();
}

IPluginCapability* VideoRopeCachePlugin::getCapabilityInterface(PluginCapabilityType type) noexcept
{
    switch (type)
    {
    case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
    case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuildV2*>(this); // V2: TensorRT reads aliases
    case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
    }
    return nullptr;
}

IPluginV3* VideoRopeCachePlugin::clone() noexcept
{
    try
    {
        return new VideoRopeCachePlugin(mAttrs);
    }
    catch (std::exception const& e)
    {
        logError(std::string("clone failed: ") + e.what());
        return nullptr;
    }
}

char const* VideoRopeCachePlugin::getPluginName() const noexcept { return kName; }
char const* VideoRopeCachePlugin::getPluginVersion() const noexcept { return kVersion; }
char const* VideoRopeCachePlugin::getPluginNamespace() const noexcept { return kNamespace; }
int32_t VideoRopeCachePlugin::getNbOutputs() const noexcept { return kNbOutputs; }

int32_t VideoRopeCachePlugin::getAliasedInput(int32_t outputIndex) noexcept
{
    switch (outputIndex)
    {
    case 1: return kKCache;
    case 2: return kVCache;
    default: return -1; // q_rot has memory of its own
    }
}

int32_t VideoRopeCachePlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    if (in == nullptr || out == nullptr || !counts(nbInputs, nbOutputs))
    {
        logError("expected 9 inputs (q, k, v, positions, inv_freq, axis_map, k_cache, v_cache, write_offset) and 3 "
                 "outputs, got " + std::to_string(nbInputs) + " and " + std::to_string(nbOutputs));
        return -1;
    }
    std::string const err = checkDescs(in, [](DynamicPluginTensorDesc const& d) { return d.desc.dims; }, mAttrs.layout);
    if (!err.empty())
        logError(err);
    return err.empty() ? 0 : -1;
}

int32_t VideoRopeCachePlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    if (outputTypes == nullptr || inputTypes == nullptr || !counts(nbInputs, nbOutputs))
        return -1;
    outputTypes[0] = inputTypes[kQ];
    outputTypes[1] = inputTypes[kKCache];
    outputTypes[2] = inputTypes[kVCache];
    return dtypeCode(inputTypes[kQ]) >= 0 ? 0 : -1;
}

int32_t VideoRopeCachePlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs,
    DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs,
    IExprBuilder& /*exprBuilder*/) noexcept
{
    if (inputs == nullptr || outputs == nullptr || !counts(nbInputs, nbOutputs) || inputs[kQ].nbDims != 4
        || inputs[kKCache].nbDims != 4 || inputs[kVCache].nbDims != 4)
    {
        logError("getOutputShapes: expected 9 inputs with 4-D q, k_cache, v_cache and 3 outputs");
        return -1;
    }
    outputs[0] = inputs[kQ];
    outputs[1] = inputs[kKCache]; // an aliased output has its input's shape
    outputs[2] = inputs[kVCache];
    return 0;
}

bool VideoRopeCachePlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    if (inOut == nullptr || !counts(nbInputs, nbOutputs) || pos < 0 || pos >= kNbInputs + kNbOutputs)
        return false;
    PluginTensorDesc const& d = inOut[pos].desc;
    if (d.format != TensorFormat::kLINEAR)
        return false;
    switch (pos)
    {
    case kQ: return dtypeCode(d.type) >= 0;
    case kPositions:
    case kInvFreq: return d.type == DataType::kFLOAT;
    case kAxisMap:
    case kOffset: return d.type == DataType::kINT32;
    default: return d.type == inOut[kQ].desc.type; // k, v, both caches and the three outputs: q's dtype
    }
}

size_t VideoRopeCachePlugin::getWorkspaceSize(DynamicPluginTensorDesc const* /*inputs*/, int32_t /*nbInputs*/,
    DynamicPluginTensorDesc const* /*outputs*/, int32_t /*nbOutputs*/) const noexcept
{
    return 0; // cos/sin live in shared memory, per token
}

int32_t VideoRopeCachePlugin::onShapeChange(
    PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    if (in == nullptr || out == nullptr || !counts(nbInputs, nbOutputs))
        return -1;
    std::string const err = checkDescs(in, [](PluginTensorDesc const& d) { return d.dims; }, mAttrs.layout);
    if (!err.empty())
        logError(err);
    return err.empty() ? 0 : -1;
}

int32_t VideoRopeCachePlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /*outputDesc*/,
    void const* const* inputs, void* const* outputs, void* /*workspace*/, cudaStream_t stream) noexcept
{
    Dims const& q = inputDesc[kQ].dims;
    Dims const& cache = inputDesc[kKCache].dims;
    bool const bhsd = mAttrs.layout == 0;
    size_t const elem = inputDesc[kQ].type == DataType::kFLOAT ? 4 : 2;
    size_t const cacheBytes = static_cast<size_t>(cache.d[0] * cache.d[1] * cache.d[2] * cache.d[3]) * elem;
    for (int32_t i : {1, 2}) // not aliased (preview feature off): the output starts as a copy of its input
    {
        void const* src = inputs[getAliasedInput(i)];
        if (outputs[i] != src && cacheBytes > 0
            && cudaMemcpyAsync(outputs[i], src, cacheBytes, cudaMemcpyDeviceToDevice, stream) != cudaSuccess)
        {
            logError("copying a cache into its unaliased output failed");
            return -1;
        }
    }
    VideoRopeCacheParams p{};
    p.q = inputs[kQ];
    p.q_out = outputs[0];
    p.k = inputs[kK];
    p.v = inputs[kV];
    p.k_cache = outputs[1];
    p.v_cache = outputs[2];
    p.positions = static_cast<float const*>(inputs[kPositions]);
    p.inv_freq = static_cast<float const*>(inputs[kInvFreq]);
    p.axis_map = static_cast<int32_t const*>(inputs[kAxisMap]);
    p.write_offset = static_cast<int32_t const*>(inputs[kOffset]);
    p.batch = q.d[0];
    p.seq = q.d[bhsd ? 2 : 1];
    p.capacity = cache.d[2];
    p.q_heads = static_cast<int32_t>(q.d[bhsd ? 1 : 2]);
    p.kv_heads = static_cast<int32_t>(cache.d[1]);
    p.head_dim = static_cast<int32_t>(q.d[3]);
    p.num_freq = static_cast<int32_t>(inputDesc[kInvFreq].dims.d[0]);
    p.num_axes = static_cast<int32_t>(inputDesc[kPositions].dims.d[0]);
    p.dtype = dtypeCode(inputDesc[kQ].type);
    p.layout = mAttrs.layout;
    p.interleaved = mAttrs.interleaved;
    p.scale = mAttrs.scale;
    if (p.batch * p.seq * p.q_heads == 0) // an empty chunk: nothing to rotate or write
        return 0;
    int const err = videorope_cache_launch(&p, stream);
    if (err != 0)
        logError("kernel launch failed with CUDA error " + std::to_string(err) + " for q " + dims(q) + ", cache "
            + dims(cache));
    return err == 0 ? 0 : -1;
}

IPluginV3* VideoRopeCachePlugin::attachToContext(IPluginResourceContext* /*context*/) noexcept
{
    return clone(); // no per-context resources
}

PluginFieldCollection const* VideoRopeCachePlugin::getFieldsToSerialize() noexcept
{
    return &mFieldCollection;
}

VideoRopeCacheCreator::VideoRopeCacheCreator()
{
    mFields = declaredFields(nullptr);
    mFieldCollection.nbFields = static_cast<int32_t>(mFields.size());
    mFieldCollection.fields = mFields.data();
}

IPluginV3* VideoRopeCacheCreator::createPlugin(
    char const* /*name*/, PluginFieldCollection const* fc, TensorRTPhase /*phase*/) noexcept
{
    try
    {
        RopeAttrs attrs;
        std::string const err = parseFields(fc, attrs);
        if (!err.empty())
        {
            logError(err);
            return nullptr;
        }
        return new VideoRopeCachePlugin(attrs);
    }
    catch (std::exception const& e)
    {
        logError(std::string("createPlugin failed: ") + e.what());
        return nullptr;
    }
}

PluginFieldCollection const* VideoRopeCacheCreator::getFieldNames() noexcept { return &mFieldCollection; }
char const* VideoRopeCacheCreator::getPluginName() const noexcept { return kName; }
char const* VideoRopeCacheCreator::getPluginVersion() const noexcept { return kVersion; }
char const* VideoRopeCacheCreator::getPluginNamespace() const noexcept { return kNamespace; }

IPluginCreatorInterface* videoRopeCacheCreator()
{
    static VideoRopeCacheCreator creator;
    return &creator;
}

} // namespace videorope

#endif // VIDEOROPE_CACHE_PLUGIN
