// TensorRT IPluginV3 for the VideoRope op (contract: videorope_trt/rope/contract.py; kernel: videorope_kernel.cu),
// the helpers the VideoRopeCache plugin shares with it, and the library's exported entry points.
//
// Inputs: x (B,H,S,D) or (B,S,H,D) fp32/fp16/bf16, positions (A,B,S) fp32, inv_freq (F) fp32, axis_map (F) int32.
// Output: y, same shape and type as x. Fields: interleaved (INT32), layout (INT32), scale (FLOAT32).
// The library exports getCreators/setLoggerFinder, so IPluginRegistry::loadLibrary, trtexec --dynamicPlugins and
// Polygraphy's --plugins load it; it links only the CUDA runtime (statically), never libnvinfer.
#include "videorope_plugin.h"

#include "videorope_cache_plugin.h"
#include "videorope_kernel.h"

#include <cstdio>
#include <cstring>
#include <exception>

using namespace nvinfer1;

namespace videorope
{
namespace
{

char const* const kName = "VideoRope";
char const* const kVersion = "1";
char const* const kNamespace = "videorope";
constexpr int32_t kNbInputs = 4;

ILoggerFinder* gLoggerFinder = nullptr; // set once by TensorRT through setLoggerFinder

void logError(std::string const& msg)
{
    logPluginError(kName, msg);
}

} // namespace

void logPluginError(char const* plugin, std::string const& msg)
{
    std::string const text = std::string(plugin) + " plugin: " + msg;
    ILogger* logger = gLoggerFinder != nullptr ? gLoggerFinder->findLogger() : nullptr;
    if (logger != nullptr)
        logger->log(ILogger::Severity::kERROR, text.c_str());
    else
        std::fprintf(stderr, "%s\n", text.c_str());
}

std::string dims(Dims const& d)
{
    std::string s = "(";
    for (int32_t i = 0; i < d.nbDims; ++i)
        s += (i ? ", " : "") + std::to_string(d.d[i]);
    return s + ")";
}

std::string checkShapes(Dims const& x, Dims const& pos, Dims const& freq, Dims const& map, int32_t layout)
{
    auto const eq = [](int64_t a, int64_t b) { return a < 0 || b < 0 || a == b; };
    if (x.nbDims != 4)
        return "x must be 4-D (B,H,S,D) or (B,S,H,D), got " + dims(x);
    if (pos.nbDims != 3 || (pos.d[0] >= 0 && (pos.d[0] < 1 || pos.d[0] > kMaxAxes)))
        return "positions must be (A, B, S) with 1 <= A <= 4, got " + dims(pos);
    int64_t const seq = x.d[layout == 0 ? 2 : 1];
    if (!eq(pos.d[1], x.d[0]) || !eq(pos.d[2], seq))
        return "positions " + dims(pos) + " does not match x " + dims(x) + " in B or S";
    if (freq.nbDims != 1 || map.nbDims != 1 || !eq(freq.d[0], map.d[0]))
        return "inv_freq " + dims(freq) + " and axis_map " + dims(map) + " must be 1-D of equal length";
    if (freq.d[0] == 0 || (freq.d[0] > 0 && x.d[3] >= 0 && 2 * freq.d[0] > x.d[3]))
        return "inv_freq has " + std::to_string(freq.d[0]) + " frequencies; expected 1..D/2 for x " + dims(x);
    return {};
}

int32_t dtypeCode(DataType t)
{
    switch (t)
    {
    case DataType::kFLOAT: return VIDEOROPE_FP32;
    case DataType::kHALF: return VIDEOROPE_FP16;
    case DataType::kBF16: return VIDEOROPE_BF16;
    default: return -1;
    }
}

std::vector<PluginField> declaredFields(RopeAttrs const* attrs)
{
    return {PluginField("interleaved", attrs ? &attrs->interleaved : nullptr, PluginFieldType::kINT32, 1),
        PluginField("layout", attrs ? &attrs->layout : nullptr, PluginFieldType::kINT32, 1),
        PluginField("scale", attrs ? &attrs->scale : nullptr, PluginFieldType::kFLOAT32, 1)};
}

std::string parseFields(PluginFieldCollection const* fc, RopeAttrs& attrs)
{
    for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i)
    {
        PluginField const& f = fc->fields[i];
        std::string const name = f.name != nullptr ? f.name : "";
        bool const isInt = f.type == PluginFieldType::kINT32 && f.length == 1 && f.data != nullptr;
        bool const isFloat = f.type == PluginFieldType::kFLOAT32 && f.length == 1 && f.data != nullptr;
        if (name == "interleaved" || name == "layout")
        {
            if (!isInt)
                return "field '" + name + "' must be one INT32";
            (name == "layout" ? attrs.layout : attrs.interleaved) = *static_cast<int32_t const*>(f.data);
        }
        else if (name == "scale")
        {
            if (!isFloat)
                return "field 'scale' must be one FLOAT32";
            attrs.scale = *static_cast<float const*>(f.data);
        }
    }
    if (attrs.interleaved != 0 && attrs.interleaved != 1)
        return "interleaved must be 0 (rotate-half) or 1 (interleaved pairs), got " + std::to_string(attrs.interleaved);
    if (attrs.layout != 0 && attrs.layout != 1)
        return "layout must be 0 (B,H,S,D) or 1 (B,S,H,D), got " + std::to_string(attrs.layout);
    if (!(attrs.scale > 0.0F && attrs.scale < 3.0e38F))
        return "scale must be a finite positive number, got " + std::to_string(attrs.scale);
    return {};
}

VideoRopePlugin::VideoRopePlugin(RopeAttrs const& attrs)
    : mAttrs(attrs)
{
    mFields = declaredFields(&mAttrs);
    mFieldCollection.nbFields = static_cast<int32_t>(mFields.size());
    mFieldCollection.fields = mFields.data();
}

IPluginCapability* VideoRopePlugin::getCapabilityInterface(PluginCapabilityType type) noexcept
{
    switch (type)
    {
    case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
    case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
    case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
    }
    return nullptr;
}

IPluginV3* VideoRopePlugin::clone() noexcept
{
    try
    {
        return new VideoRopePlugin(mAttrs);
    }
    catch (std::exception const& e)
    {
        logError(std::string("clone failed: ") + e.what());
        return nullptr;
    }
}

char const* VideoRopePlugin::getPluginName() const noexcept { return kName; }
char const* VideoRopePlugin::getPluginVersion() const noexcept { return kVersion; }
char const* VideoRopePlugin::getPluginNamespace() const noexcept { return kNamespace; }
int32_t VideoRopePlugin::getNbOutputs() const noexcept { return 1; }

int32_t VideoRopePlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    if (in == nullptr || out == nullptr || nbInputs != kNbInputs || nbOutputs != 1)
    {
        logError("expected 4 inputs (x, positions, inv_freq, axis_map) and 1 output, got " + std::to_string(nbInputs)
            + " and " + std::to_string(nbOutputs));
        return -1;
    }
    std::string const err = checkShapes(in[0].desc.dims, in[1].desc.dims, in[2].desc.dims, in[3].desc.dims, mAttrs.layout);
    if (!err.empty())
        logError(err);
    return err.empty() ? 0 : -1;
}

int32_t VideoRopePlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    if (outputTypes == nullptr || inputTypes == nullptr || nbOutputs != 1 || nbInputs != kNbInputs)
        return -1;
    outputTypes[0] = inputTypes[0];
    return dtypeCode(inputTypes[0]) >= 0 ? 0 : -1;
}

int32_t VideoRopePlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* /*shapeInputs*/,
    int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs, IExprBuilder& /*exprBuilder*/) noexcept
{
    if (inputs == nullptr || outputs == nullptr || nbInputs != kNbInputs || nbOutputs != 1 || inputs[0].nbDims != 4)
    {
        logError("getOutputShapes: expected 4 inputs with a 4-D x and 1 output");
        return -1;
    }
    outputs[0] = inputs[0];
    return 0;
}

bool VideoRopePlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    if (inOut == nullptr || nbInputs != kNbInputs || nbOutputs != 1 || pos < 0 || pos > kNbInputs)
        return false;
    PluginTensorDesc const& d = inOut[pos].desc;
    if (d.format != TensorFormat::kLINEAR)
        return false;
    switch (pos)
    {
    case 0: return dtypeCode(d.type) >= 0;
    case 1:
    case 2: return d.type == DataType::kFLOAT;
    case 3: return d.type == DataType::kINT32;
    default: return d.type == inOut[0].desc.type; // the output
    }
}

size_t VideoRopePlugin::getWorkspaceSize(DynamicPluginTensorDesc const* /*inputs*/, int32_t /*nbInputs*/,
    DynamicPluginTensorDesc const* /*outputs*/, int32_t /*nbOutputs*/) const noexcept
{
    return 0; // cos/sin live in shared memory, per token
}

int32_t VideoRopePlugin::onShapeChange(
    PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    if (in == nullptr || out == nullptr || nbInputs != kNbInputs || nbOutputs != 1)
        return -1;
    std::string const err = checkShapes(in[0].dims, in[1].dims, in[2].dims, in[3].dims, mAttrs.layout);
    if (!err.empty())
        logError(err);
    return err.empty() ? 0 : -1;
}

int32_t VideoRopePlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /*outputDesc*/,
    void const* const* inputs, void* const* outputs, void* /*workspace*/, cudaStream_t stream) noexcept
{
    Dims const& x = inputDesc[0].dims;
    bool const bhsd = mAttrs.layout == 0;
    VideoRopeParams p{};
    p.q = inputs[0];
    p.q_out = outputs[0];
    p.positions = static_cast<float const*>(inputs[1]);
    p.inv_freq = static_cast<float const*>(inputs[2]);
    p.axis_map = static_cast<int32_t const*>(inputs[3]);
    p.batch = x.d[0];
    p.seq = x.d[bhsd ? 2 : 1];
    p.q_heads = static_cast<int32_t>(x.d[bhsd ? 1 : 2]);
    p.head_dim = static_cast<int32_t>(x.d[3]);
    p.num_freq = static_cast<int32_t>(inputDesc[2].dims.d[0]);
    p.num_axes = static_cast<int32_t>(inputDesc[1].dims.d[0]);
    p.dtype = dtypeCode(inputDesc[0].type);
    p.layout = mAttrs.layout;
    p.interleaved = mAttrs.interleaved;
    p.scale = mAttrs.scale;
    if (x.d[0] * x.d[1] * x.d[2] == 0) // an empty tensor: nothing to rotate
        return 0;
    int const err = videorope_launch(&p, stream);
    if (err != 0)
        logError("kernel launch failed with CUDA error " + std::to_string(err) + " for x " + dims(x));
    return err == 0 ? 0 : -1;
}

IPluginV3* VideoRopePlugin::attachToContext(IPluginResourceContext* /*context*/) noexcept
{
    return clone(); // no per-context resources
}

PluginFieldCollection const* VideoRopePlugin::getFieldsToSerialize() noexcept
{
    return &mFieldCollection;
}

VideoRopeCreator::VideoRopeCreator()
{
    mFields = declaredFields(nullptr);
    mFieldCollection.nbFields = static_cast<int32_t>(mFields.size());
    mFieldCollection.fields = mFields.data();
}

IPluginV3* VideoRopeCreator::createPlugin(char const* /*name*/, PluginFieldCollection const* fc, TensorRTPhase /*phase*/) noexcept
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
        return new VideoRopePlugin(attrs);
    }
    catch (std::exception const& e)
    {
        logError(std::string("createPlugin failed: ") + e.what());
        return nullptr;
    }
}

PluginFieldCollection const* VideoRopeCreator::getFieldNames() noexcept { return &mFieldCollection; }
char const* VideoRopeCreator::getPluginName() const noexcept { return kName; }
char const* VideoRopeCreator::getPluginVersion() const noexcept { return kVersion; }
char const* VideoRopeCreator::getPluginNamespace() const noexcept { return kNamespace; }

} // namespace videorope

extern "C" VIDEOROPE_API void setLoggerFinder(nvinfer1::ILoggerFinder* finder)
{
    videorope::gLoggerFinder = finder;
}

extern "C" VIDEOROPE_API nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    static videorope::VideoRopeCreator creator;
#if VIDEOROPE_CACHE_PLUGIN
    static nvinfer1::IPluginCreatorInterface* const creators[] = {&creator, videorope::videoRopeCacheCreator()};
#else // headers before TensorRT 10.3: no aliased plugin outputs, so no VideoRopeCache
    static nvinfer1::IPluginCreatorInterface* const creators[] = {&creator};
#endif
    nbCreators = static_cast<int32_t>(sizeof(creators) / sizeof(creators[0]));
    return creators;
}
